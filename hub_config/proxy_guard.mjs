// afhub's guard around configurable-http-proxy (CHP).
//
//   node proxy_guard.mjs <configurable-http-proxy> [its options...]
//
// Runs the given CHP command line unchanged, with one difference: a request whose URL path
// holds malformed percent-encoding (`/hub/api/users/%80`, `/user/bob/%`) is answered 400
// through CHP's own error path (the hub's error page, or an empty 400 on a websocket), instead
// of CHP 5's 500 with a stack trace in the log (its router calls decodeURIComponent on the
// path and does not catch the URIError). Such a request cannot name any route, so refusing it
// at the front door loses nothing. Everything else (routing, the REST API, metrics, options)
// is CHP's own code: this file only wraps ConfigurableProxy.prototype.handleProxy.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

export function malformedPath(url) {
  let pathname;
  try {
    pathname = new URL(url, "http://example.com").pathname;
  } catch (e) {
    return false; // not ours to judge: CHP answers what it cannot parse as before
  }
  try {
    decodeURIComponent(pathname);
    return false;
  } catch (e) {
    if (e instanceof URIError) return true;
    throw e;
  }
}

export function guard(ConfigurableProxy) {
  const proto = ConfigurableProxy.prototype;
  if (typeof proto.handleProxy !== "function" || typeof proto.handleProxyError !== "function") {
    throw new Error("this configurable-http-proxy has no handleProxy/handleProxyError to guard");
  }
  const handleProxy = proto.handleProxy;
  // handleProxy(kind, req, res) for web requests, (kind, req, socket, head) for websockets;
  // handleProxyError takes the socket as `res` for websockets.
  proto.handleProxy = function (kind, req, res, ...rest) {
    if (malformedPath(req.url)) {
      this.handleProxyError(400, kind, req, res);
      return Promise.resolve();
    }
    return handleProxy.call(this, kind, req, res, ...rest);
  };
}

async function main() {
  const bin = process.argv[2];
  if (!bin) {
    console.error("usage: node proxy_guard.mjs <configurable-http-proxy> [options]");
    process.exit(2);
  }
  let real;
  try {
    real = fs.realpathSync(bin);
  } catch (e) {
    console.error(`proxy_guard: configurable-http-proxy ${JSON.stringify(bin)} not found`);
    process.exit(2);
  }
  const lib = path.join(path.dirname(real), "..", "lib", "configproxy.js");
  const { default: ConfigurableProxy } = await import(pathToFileURL(lib).href);
  guard(ConfigurableProxy);
  // CHP's CLI reads process.argv as [node, script, options...]
  process.argv.splice(1, 2, real);
  await import(pathToFileURL(real).href);
}

if (import.meta.url === pathToFileURL(fs.realpathSync(process.argv[1] || "")).href) {
  await main();
}
