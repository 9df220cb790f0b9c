"""A real SMTP server for dmon's email tests (aiosmtpd, loopback only).

Listens on 127.0.0.1, on an ephemeral port unless argv[1] names one, and
prints ``READY <port>`` on stdout once it accepts connections. Then it prints
one JSON line per message received:

    {"mail_from": "...", "rcpt_tos": ["..."], "data": "<the raw message>",
     "subject": "<decoded Subject header>", "body": "<decoded text body>"}

``subject`` and ``body`` undo any MIME transfer encoding (quoted-printable,
base64, RFC 2047 words), so tests can match plain text in them.

Every line is flushed at once. It runs until killed, or until its stdin
reaches end of file when stdin is a pipe (so it dies with the test that
spawned it even if that test could not kill it).
"""

import asyncio
import email
import email.policy
import json
import os
import stat
import sys
import threading

from aiosmtpd.smtp import SMTP


class Sink:
    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="replace")
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": data,
        }
        record.update(decode(envelope.original_content or envelope.content))
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
        return "250 Message accepted for delivery"


def decode(raw):
    """The Subject and the plain-text body of a message, decoded."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="replace")
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        subject = str(msg.get("Subject", ""))
        part = msg.get_body(preferencelist=("plain", "html")) or msg
        try:
            body = part.get_content()
        except Exception:
            body = part.get_payload(decode=True) or b""
        if isinstance(body, bytes):
            body = body.decode("utf-8", errors="replace")
        return {"subject": subject, "body": str(body)}
    except Exception as err:  # never lose a message over a parse problem
        return {"subject": "", "body": "", "parse_error": repr(err)}


def stdin_is_pipe():
    try:
        return stat.S_ISFIFO(os.fstat(0).st_mode)
    except OSError:
        return False


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    loop = asyncio.get_running_loop()
    handler = Sink()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost"), host="127.0.0.1", port=port
    )
    await serve_until_stdin_closes(loop, server)


async def serve_until_stdin_closes(loop, server):
    """Prints ``READY <port>``, then serves until stdin, when it is a pipe,
    reaches end of file (or for ever)."""
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"READY {bound}\n")
    sys.stdout.flush()

    done = asyncio.Event()
    if stdin_is_pipe():

        def watch_stdin():
            while os.read(0, 65536):
                pass
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
    async with server:
        await done.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
