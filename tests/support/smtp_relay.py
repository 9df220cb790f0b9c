"""A real SMTP relay that wants TLS and a login, for dmon's tests (aiosmtpd,
loopback only).

    smtp_relay.py --mode starttls|starttls-open|tls|plain [--cert PEM --key PEM]
                  [--user USER --password PASSWORD]

``starttls``: offers STARTTLS and requires it before anything else (RFC
3207), and requires AUTH (offered only once TLS is up) before mail.
``tls``: TLS from the first byte (implicit TLS, as on port 465), AUTH
required. ``starttls-open``: offers STARTTLS, requires neither it nor AUTH
(as a local relay). ``plain``: no TLS at all, no STARTTLS offered, no AUTH.

Prints ``READY <port>`` on stdout once it accepts connections, then one
JSON line per login attempt (never the password):

    {"auth": "ok" | "failed", "user": "...", "tls": true}

and one per message, as tests/support/smtp_sink.py does, with whether the
session was encrypted and who logged in:

    {"mail_from": ..., "rcpt_tos": [...], "data": ..., "subject": ...,
     "body": ..., "tls": true, "user": "..." | null}

It runs until killed, or until its stdin reaches end of file when stdin is
a pipe.
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult

from smtp_sink import decode, serve_until_stdin_closes


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def encrypted(server):
    return server.transport.get_extra_info("ssl_object") is not None


class Relay:
    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": text,
            "tls": encrypted(server),
            "user": session.auth_data if session.authenticated else None,
        }
        record.update(decode(data))
        emit(record)
        return "250 Message accepted for delivery"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        login = auth_data.login.decode("utf-8", errors="replace")
        ok = login == user and auth_data.password.decode("utf-8", errors="replace") == password
        emit({"auth": "ok" if ok else "failed", "user": login, "tls": encrypted(server)})
        # handled=False: aiosmtpd then answers a failure with 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    return check


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["starttls", "starttls-open", "tls", "plain"], required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    context = None
    if args.mode != "plain":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    def protocol():
        if args.mode == "plain":
            return SMTP(Relay(), hostname="localhost")
        if args.mode == "starttls-open":
            return SMTP(Relay(), hostname="localhost", tls_context=context)
        auth = dict(auth_required=True, authenticator=authenticator(args.user, args.password))
        if args.mode == "starttls":
            return SMTP(
                Relay(),
                hostname="localhost",
                tls_context=context,
                require_starttls=True,
                auth_require_tls=True,
                **auth,
            )
        # The socket is TLS already, which aiosmtpd cannot see: it must not
        # wait for a STARTTLS before offering AUTH.
        return SMTP(Relay(), hostname="localhost", auth_require_tls=False, **auth)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        protocol,
        host="127.0.0.1",
        port=0,
        ssl=context if args.mode == "tls" else None,
    )
    await serve_until_stdin_closes(loop, server)


if __name__ == "__main__":
    # aiosmtpd warns that AUTH without its own TLS is unsafe: in "tls" mode
    # the socket is TLS.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
