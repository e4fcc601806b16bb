/**
 * The one HTTP function of the extension: every call to the afhub server extension
 * (`{baseUrl}afhub/api/...`) goes through `requestAPI`, which uses `ServerConnection`
 * (base URL, XSRF header and credentials handled by JupyterLab).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** A failed call: the HTTP status (0 when the server was unreachable) and a readable message. */
export class APIError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
    this.name = 'APIError';
  }

  /** The server no longer accepts this browser session (hub logout, expired login). */
  get unauthorized(): boolean {
    return this.status === 401 || this.status === 403;
  }
}

/** `afhub/api/<endPoint>` under the server's base URL. */
export function apiUrl(
  endPoint: string,
  settings: ServerConnection.ISettings
): string {
  return URLExt.join(settings.baseUrl, 'afhub', 'api', endPoint);
}

/**
 * Call `afhub/api/<endPoint>` and return its JSON body.
 *
 * Errors become `APIError` with the server's `message` (afhub handlers answer
 * `{"message": ...}`), never a stack trace or an HTML page.
 */
export async function requestAPI<T>(
  endPoint: string,
  settings: ServerConnection.ISettings,
  init: RequestInit = {}
): Promise<T> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      apiUrl(endPoint, settings),
      init,
      settings
    );
  } catch (error) {
    throw new APIError(0, `server unreachable: ${String(error)}`);
  }
  const text = await response.text();
  let body: any = undefined;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
  }
  if (!response.ok) {
    const message =
      (body && typeof body.message === 'string' && body.message) ||
      `${response.status} ${response.statusText || 'error'}`;
    throw new APIError(response.status, message);
  }
  return body as T;
}
