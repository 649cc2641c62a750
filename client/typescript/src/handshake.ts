/**
 * Telling a server that refused the handshake apart from one that is not there.
 *
 * Node reports a TCP (and, on the client's side, TLS) connection as made before the server has
 * said a word: a TLS server answering a plaintext client, or a mutual-TLS server a client without
 * the certificate it wants, then just closes it, and the first call failed with "http/2 stream
 * closed with error code CANCEL". So `connect()` waits for the server's HTTP/2 SETTINGS on a
 * connection of its own, and says what went wrong when they do not come.
 */
import * as http2 from "node:http2";
import { Code } from "@connectrpc/connect";
import { WfeError } from "./errors.js";

/** What the client brings to the handshake: TLS or not, a client certificate or not. */
export interface HandshakeSide {
  tls: boolean;
  clientCertificate: boolean;
}

/**
 * Resolves once the server at `baseUrl` has sent its HTTP/2 SETTINGS; a WfeError (Unavailable) saying why not.
 * `timeoutMs` is what is left of the wait; `totalMs` the whole wait, as the error names it.
 */
export function awaitServerSettings(
  baseUrl: string,
  address: string,
  side: HandshakeSide,
  sessionOptions: http2.SecureClientSessionOptions,
  timeoutMs: number,
  totalMs = timeoutMs,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl, sessionOptions);
    const timer = setTimeout(() => {
      finish(new WfeError(`the server at ${address} did not answer the HTTP/2 handshake within ${totalMs} ms`, {
        code: Code.Unavailable,
      }));
    }, timeoutMs);
    let done = false;
    function finish(error?: WfeError) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      session.destroy();
      if (error === undefined) resolve();
      else reject(error);
    }
    session.once("remoteSettings", () => finish());
    session.once("error", (cause: Error) => finish(handshakeError(address, side, cause)));
    session.once("close", () => finish(handshakeError(address, side)));
  });
}

/** The error for a connection the server did not accept: `cause` is Node's error, if it gave one. */
export function handshakeError(address: string, side: HandshakeSide, cause?: Error): WfeError {
  const options = cause === undefined ? { code: Code.Unavailable } : { code: Code.Unavailable, cause };
  if (cause !== undefined) {
    const code = (cause as NodeJS.ErrnoException).code ?? "";
    const reason = `${cause.message.split("\n", 1)[0]}${code && !cause.message.includes(code) ? ` (${code})` : ""}`;
    if (!side.tls || !/SSL|CERT|TLS|SELF_SIGNED|VERIFY/i.test(code + cause.message)) {
      return new WfeError(`cannot connect to wfe-sqlite server at ${address}: ${reason}`, options);
    }
    const host = (cause as { host?: unknown }).host;
    let hint = "";
    if (/WRONG_VERSION_NUMBER|wrong version number/i.test(code + cause.message)) {
      hint = "; does the server serve plaintext? then connect without tls";
    } else if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
      // Checked before the CA hint below: this code matches /CERT/ too, but the chain was fine.
      hint =
        `; the server's certificate does not hold the name ${typeof host === "string" ? host : "connected to"}: ` +
        "connect with a name it holds, or set tls.serverName to one";
    } else if (/VERIFY|CERT|SELF_SIGNED/i.test(code)) {
      hint = "; the server's certificate does not chain to the CA the client trusts (tls.ca)";
    }
    return new WfeError(`TLS handshake with the wfe-sqlite server at ${address} failed: ${reason}${hint}`, options);
  }
  if (!side.tls) {
    return new WfeError(
      `handshake with the wfe-sqlite server at ${address} failed: it closed the connection; ` +
        "it expects TLS: connect with { tls: { ca } }",
      options,
    );
  }
  if (!side.clientCertificate) {
    return new WfeError(
      `TLS handshake with the wfe-sqlite server at ${address} failed: it closed the connection; ` +
        "it requires a client certificate (mutual TLS): connect with { tls: { ca, cert, key } }",
      options,
    );
  }
  return new WfeError(
    `TLS handshake with the wfe-sqlite server at ${address} failed: it closed the connection; ` +
      "does it accept the client certificate (one signed by its --tls-client-ca)?",
    options,
  );
}
