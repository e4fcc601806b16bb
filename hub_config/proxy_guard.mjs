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
// is CHP's own code: this file only wraps ConfigurableProxy.prototype.handleProxyError, turning
// the 500 CHP gives a URIError from its route lookup into a 400 (no per-request work added).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

export function guard(ConfigurableProxy) {
  const proto = ConfigurableProxy.prototype;
  if (typeof proto.handleProxyError !== "function") {
    throw new Error("this configurable-http-proxy has no handleProxyError to guard");
  }
  const handleProxyError = proto.handleProxyError;
  // handleProxy sends every error of its route lookup here as a 500 with the error; the
  // lookup's decodeURIComponent of the path throws URIError for malformed percent-encoding
  proto.handleProxyError = function (code, kind, req, res, e) {
    if (code === 500 && e instanceof URIError) {
      return handleProxyError.call(this, 400, kind, req, res);
    }
    return handleProxyError.call(this, code, kind, req, res, e);
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
