// Preloaded with `node --import ./loopback.mjs` so a server that listens on every interface
// (server-everything's `app.listen(PORT)`) binds 127.0.0.1 only: a listen() on a port with no
// host, or with a wildcard host, gets 127.0.0.1. Unix sockets, handles and explicit hosts are
// left alone.
import net from "node:net";

const LOOPBACK = "127.0.0.1";
const WILDCARD = new Set([undefined, null, "", "0.0.0.0", "::", "[::]"]);
const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
  const [first] = args;
  if (first === undefined || typeof first === "function") {
    // listen([callback]): a random port on every interface.
    args.splice(0, 0, 0, LOOPBACK);
  } else if (typeof first === "object" && first !== null) {
    const named = first.path !== undefined || first.handle !== undefined || first.fd !== undefined;
    if (!named && WILDCARD.has(first.host)) args[0] = { ...first, host: LOOPBACK };
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback])
    const host = args[1];
    if (typeof host === "string" || host === undefined || host === null) {
      if (WILDCARD.has(host)) args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  }
  return listen.apply(this, args);
};
