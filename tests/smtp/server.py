"""An SMTP server on loopback for the e-mail tests (aiosmtpd).

    server.py PORT OUT_DIR [--refuse-first-of-each-subject]

Each accepted message is written to OUT_DIR/<n>.json, decoded: envelope, headers, the text
and HTML parts. With --refuse-first-of-each-subject, the first message of each subject is
refused at DATA with a 451 (try again later), so every kind of mail is retried once.
Prints "ready" once it listens.
"""

import email
import email.policy
import json
import os
import sys
import threading

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out_dir, refuse_first):
        self.out_dir = out_dir
        self.refuse_first = refuse_first
        self.subjects = set()
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        subject = str(message["Subject"])
        if self.refuse_first and subject not in self.subjects:
            self.subjects.add(subject)
            return "451 4.3.0 Try again later"
        parts = {}
        for part in message.walk():
            kind = part.get_content_type()
            if kind in ("text/plain", "text/html"):
                parts[kind] = part.get_content()
        self.count += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": {k: str(v) for k, v in message.items()},
            "text": parts.get("text/plain", ""),
            "html": parts.get("text/html", ""),
        }
        path = os.path.join(self.out_dir, f"{self.count}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 Message accepted"


def main():
    port, out_dir = int(sys.argv[1]), sys.argv[2]
    refuse_first = "--refuse-first-of-each-subject" in sys.argv[3:]
    controller = Controller(Handler(out_dir, refuse_first), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
