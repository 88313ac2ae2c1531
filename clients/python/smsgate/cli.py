"""The ``smsgate`` command: the thin client for humans and shell scripts.

smsgate send PHONE (TEXT | --template ID [--param K=V]...) [--wait]
smsgate batch FILE.csv (--text TEXT | --template ID [--param K=V]...) [--wait]
    [--chunk-size N]
smsgate get ID | list [--status S]... [--phone P] [--batch ID] [--limit N]
smsgate watch [--id ID]... [--batch ID] [--status S]... [--count N]
smsgate replies [--resume-token T] [--token-file F] [--count N]
smsgate verify generate PHONE --scope S [--caller]
smsgate verify check CODE (--id V | --phone P --scope S)
smsgate templates list | templates preview (ID | --body TEXT) [--param K=V]...

It connects as ``Client.from_env()`` does (SMSGATE_TARGET, SMSGATE_TOKEN,
SMSGATE_TLS*); ``--target`` overrides the address. ``--json`` prints protobuf
JSON (one object per line for ``list``, ``watch`` and ``replies``). A failed call prints its
code, reason and field violations on stderr and exits with its class's code
(EXIT_CODES). Arguments are parsed with argparse: the client stays on grpcio,
protobuf and googleapis-common-protos alone. With the ``smsgate[cli]`` extra
(rich) on a terminal, ``batch --wait`` shows a progress bar and tables, and
``watch`` a table redrawn in place (terminal.py); otherwise plain lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from smsgate.build import TERMINAL, Recipient
from smsgate.client import Client
from smsgate.connection import Connection
from smsgate.errors import DeadlineExceeded, Error, error_from_rpc
from smsgate.terminal import SendProgress, WaitProgress, WatchTable, batch_summary, rich_console
from smsgate.v1 import (
    message_pb2,
    sms_service_pb2,
    template_service_pb2,
    verification_service_pb2,
)

__all__ = ["EXIT_CODES", "main"]

S = message_pb2.MessageStatus
V = verification_service_pb2.VerificationResult

#: Exit codes by class of failure; 0 is success and 2 a usage error (argparse).
EXIT_CODES: dict[grpc.StatusCode, int] = {
    # The request is wrong: fix it before trying again.
    grpc.StatusCode.INVALID_ARGUMENT: 3,
    grpc.StatusCode.FAILED_PRECONDITION: 3,
    grpc.StatusCode.OUT_OF_RANGE: 3,
    grpc.StatusCode.ALREADY_EXISTS: 3,
    grpc.StatusCode.NOT_FOUND: 4,
    grpc.StatusCode.UNAUTHENTICATED: 5,
    grpc.StatusCode.PERMISSION_DENIED: 5,
    # Try again later (after the printed delay, when there is one).
    grpc.StatusCode.RESOURCE_EXHAUSTED: 6,
    grpc.StatusCode.UNAVAILABLE: 7,
    grpc.StatusCode.DEADLINE_EXCEEDED: 7,
}
#: Recipients per BatchSend of ``smsgate batch``: the server's default limit
#: (SMSGATE_BATCH_MAX_RECIPIENTS); a longer CSV is sent as several batches.
CHUNK_SIZE = 10_000
#: Any other failed call, or a verification code that did not verify.
EXIT_FAILED = 1
#: ``--wait`` ended before every message was terminal.
EXIT_TIMEOUT = 8


def _status_name(status: int) -> str:
    return S.Name(status).removeprefix("MESSAGE_STATUS_")  # type: ignore[arg-type]


def _status(text: str) -> message_pb2.MessageStatus.ValueType:
    name = text.upper()
    try:
        return S.Value(name if name.startswith("MESSAGE_STATUS_") else f"MESSAGE_STATUS_{name}")
    except ValueError:
        choices = ", ".join(_status_name(v) for v in S.values() if v)
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {choices}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _time(ts: ProtoMessage) -> str:
    seconds = getattr(ts, "seconds", 0) + getattr(ts, "nanos", 0) / 1e9
    if not seconds:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Output:
    """Prints results as text for people or as protobuf JSON for programs."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout) -> None:
        self.as_json = as_json
        self.out = out

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def proto(self, message: ProtoMessage, text: str, *, one_line: bool = False) -> None:
        if self.as_json:
            found = json_format.MessageToDict(message, preserving_proto_field_name=True)
            self.line(json.dumps(found, ensure_ascii=False, indent=None if one_line else 2))
        else:
            self.line(text)

    def message(self, m: message_pb2.Message, *, one_line: bool = False) -> None:
        error = f"  {m.error.code} {m.error.reason}" if m.error.code else ""
        summary = f"{m.id}  {_status_name(m.status)}  {m.phone_number}  {_time(m.update_time)}"
        if one_line:
            self.proto(m, summary + error, one_line=True)
            return
        rows = [summary + error]
        rows += [
            f"  {_time(h.time)}  {_status_name(h.status)}  {h.detail}".rstrip() for h in m.history
        ]
        self.proto(m, "\n".join(rows))

    def event(self, e: message_pb2.StatusEvent) -> None:
        mark = "  (snapshot)" if e.snapshot else ""
        text = f"{_time(e.time)}  {e.message_id}  {_status_name(e.status)}  {e.detail}{mark}"
        self.proto(e, text.rstrip(), one_line=True)


def _print_error(error: Error, as_json: bool) -> int:
    if as_json:
        body = {
            "code": error.code.name,
            "message": error.message,
            "reason": error.reason,
            "field_violations": [
                {"field": v.field, "description": v.description} for v in error.field_violations
            ],
            "retry_after": error.retry_after,
        }
        print(json.dumps(body, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"smsgate: {error}", file=sys.stderr)
        for v in error.field_violations:
            print(f"  {v.field}: {v.description}", file=sys.stderr)
        for q in error.quota_violations:
            print(f"  {q.subject}: {q.description}", file=sys.stderr)
        if error.retry_after is not None:
            print(f"  retry after {error.retry_after:g}s", file=sys.stderr)
    return EXIT_CODES.get(error.code, EXIT_FAILED)


# -- commands -----------------------------------------------------------------


def _send(client: Client, args: argparse.Namespace, out: Output) -> int:
    if (args.text is None) == (args.template is None):
        raise _Usage("give either TEXT or --template")
    sent = client.send(
        args.phone, args.text, template_id=args.template, params=dict(args.param) or None
    )
    if args.wait:
        try:
            sent = client.wait(sent.id, timeout=args.timeout)
        except TimeoutError as exc:
            print(f"smsgate: {exc}", file=sys.stderr)
            out.message(sent)
            return EXIT_TIMEOUT
    out.message(sent)
    return 0


def _recipients(file: TextIO) -> list[Recipient]:
    """A CSV with a header: the first column the phone number, the others the
    recipient's own template parameters (empty cells left out)."""
    rows = csv.reader(file)
    header = next(rows, None)
    if not header:
        raise _Usage("the CSV is empty: a header row (phone,param,...) comes first")
    names = [h.strip() for h in header[1:]]
    found: list[Recipient] = []
    for row in rows:
        if not row or not row[0].strip():
            continue
        params = {n: v for n, v in zip(names, row[1:], strict=False) if n and v}
        found.append((row[0].strip(), params) if params else row[0].strip())
    return found


def _batch(client: Client, args: argparse.Namespace, out: Output) -> int:
    if (args.text is None) == (args.template is None):
        raise _Usage("give either --text or --template")
    with open(args.file, newline="", encoding="utf-8") as f:
        recipients = _recipients(f)
    results = _send_chunks(client, recipients, args)
    final: dict[str, int] = {}
    timed_out = False
    if args.wait:
        timed_out = not _wait_for_batches(client, results, final, args.timeout)
    delivered = sum(1 for s in final.values() if s == S.MESSAGE_STATUS_DELIVERED)
    if out.as_json:
        bodies = [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in results]
        # One batch: its response as it is; several: each, with the totals.
        body: dict[str, Any] = bodies[0] if len(bodies) == 1 else {"batches": bodies}
        if len(bodies) > 1:
            body["accepted_count"] = sum(r.accepted_count for r in results)
            body["rejected_count"] = sum(r.rejected_count for r in results)
        if args.wait:
            body["final_statuses"] = {i: _status_name(s) for i, s in final.items()}
            body["delivered_count"] = delivered
        out.line(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        rejected = [
            (r.phone_number, r.error.reason, r.error.description)
            for result in results
            for r in result.results
            if not r.message_id
        ]
        counts = {
            "accepted": sum(r.accepted_count for r in results),
            "rejected": sum(r.rejected_count for r in results),
        }
        if args.wait:
            counts |= {"delivered": delivered, "not delivered": len(final) - delivered}
        batch_summary(out.out, ", ".join(r.batch_id for r in results), counts, rejected)
    return EXIT_TIMEOUT if timed_out else 0


def _send_chunks(
    client: Client, recipients: list[Recipient], args: argparse.Namespace
) -> list[sms_service_pb2.BatchSendResponse]:
    """One BatchSend per ``--chunk-size`` recipients (a batch each), with a
    progress bar when there are several. A failed call stops the rest: what
    was sent before it is said on stderr, then the error is reported."""
    size = args.chunk_size
    chunks = [recipients[i : i + size] for i in range(0, len(recipients), size)] or [[]]
    results: list[sms_service_pb2.BatchSendResponse] = []
    with SendProgress(len(recipients) if len(chunks) > 1 else 0, sys.stderr) as progress:
        for chunk in chunks:
            try:
                result = client.send_batch(
                    chunk, args.text, template_id=args.template, params=dict(args.param) or None
                )
            except Error:
                if results:
                    sent = sum(len(r.results) for r in results)
                    batches = ", ".join(r.batch_id for r in results)
                    print(
                        f"smsgate: stopped after {sent} of {len(recipients)} recipients, "
                        f"sent in batches {batches}",
                        file=sys.stderr,
                    )
                raise
            results.append(result)
            progress.sent(result.accepted_count, result.rejected_count)
    return results


def _wait_for_batches(
    client: Client,
    results: Sequence[sms_service_pb2.BatchSendResponse],
    final: dict[str, int],
    timeout: float,
) -> bool:
    """Follow each batch until every accepted message is terminal (True) or
    ``timeout`` seconds pass; ``final`` gets each terminal status. Each watch
    opens with a snapshot of its messages, so those that finished before it
    opened (while an earlier batch was followed) are counted too."""
    deadline = time.monotonic() + timeout
    accepted = sum(r.accepted_count for r in results)
    with WaitProgress(accepted, sys.stderr) as progress:
        for result in results:
            ids = {r.message_id for r in result.results if r.message_id}
            if not ids:
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not _wait_for_batch(
                client, result.batch_id, ids, final, left, progress
            ):
                return False
    return True


def _wait_for_batch(
    client: Client,
    batch_id: str,
    ids: set[str],
    final: dict[str, int],
    timeout: float,
    progress: WaitProgress,
) -> bool:
    """Follow one batch until every id is terminal (True) or the timeout passes."""
    request = sms_service_pb2.WatchStatusRequest(batch_id=batch_id)
    call = client.sms.WatchStatus(request, metadata=client.connection.metadata, timeout=timeout)
    try:
        for response in call:
            e = response.event
            if e.message_id in ids and e.status in TERMINAL and e.message_id not in final:
                final[e.message_id] = e.status
                progress.finished(_status_name(e.status))
                if ids <= final.keys():
                    return True
    except grpc.RpcError as exc:
        error = error_from_rpc(exc)
        if not isinstance(error, DeadlineExceeded):
            raise error from None
    finally:
        call.cancel()
    return False


def _get(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.message(client.get(args.id))
    return 0


def _list(client: Client, args: argparse.Namespace, out: Output) -> int:
    messages = client.list(statuses=args.status, phone_number=args.phone, batch_id=args.batch)
    for n, m in enumerate(messages):
        if n >= args.limit:
            break
        out.message(m, one_line=True)
    return 0


def _watch(client: Client, args: argparse.Namespace, out: Output) -> int:
    events = client.watch(
        message_ids=args.id,
        batch_id=args.batch,
        statuses=args.status,
        resume_token=args.resume_token,
        token_file=args.token_file,
    )
    console = None if out.as_json else rich_console(out.out)
    if console is None:
        for n, e in enumerate(events, start=1):
            out.event(e)
            if args.count and n >= args.count:
                break
        return 0
    with WatchTable(console) as table:
        for n, e in enumerate(events, start=1):
            table.add(e.message_id, _status_name(e.status), _time(e.time), e.detail, e.snapshot)
            if args.count and n >= args.count:
                break
    return 0


def _replies(client: Client, args: argparse.Namespace, out: Output) -> int:
    replies = client.watch_replies(resume_token=args.resume_token, token_file=args.token_file)
    for n, r in enumerate(replies, start=1):
        mark = "  (opted out)" if r.opted_out else ""
        text = f"{_time(r.receive_time)}  {r.phone_number}  {r.provider}  {r.text}{mark}"
        out.proto(r, text, one_line=True)
        if args.count and n >= args.count:
            break
    return 0


def _verify_generate(client: Client, args: argparse.Namespace, out: Output) -> int:
    delivery = (
        verification_service_pb2.CODE_DELIVERY_CALLER
        if args.caller
        else verification_service_pb2.CODE_DELIVERY_SMS
    )
    made = client.generate_code(args.phone, args.scope, length=args.length, delivery=delivery)
    text = f"verification {made.verification_id}, expires {_time(made.expire_time)}"
    text += f"\ncode {made.code}" if made.code else f"\nsent as message {made.message_id}"
    out.proto(made, text)
    return 0


def _verify_check(client: Client, args: argparse.Namespace, out: Output) -> int:
    if not args.id and not (args.phone and args.scope):
        raise _Usage("give --id, or --phone and --scope")
    checked = client.verify_code(
        args.code, verification_id=args.id, phone_number=args.phone, scope=args.scope
    )
    name = V.Name(checked.result).removeprefix("VERIFICATION_RESULT_")
    left = f" ({checked.attempts_left} attempts left)" if checked.attempts_left else ""
    out.proto(checked, name + left)
    return 0 if checked.result == V.VERIFICATION_RESULT_VERIFIED else EXIT_FAILED


def _templates_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    for t in client.list_templates():
        kind = template_service_pb2.TemplateKind.Name(t.kind).removeprefix("TEMPLATE_KIND_")
        out.proto(t, f"{t.id}  v{t.version}  {kind}  {t.display_name or t.body}", one_line=True)
    return 0


def _templates_preview(client: Client, args: argparse.Namespace, out: Output) -> int:
    if (args.id is None) == (args.body is None):
        raise _Usage("give either a template ID or --body")
    shown = client.render_template(
        args.id or "",
        body=args.body or "",
        params=dict(args.param),
        phone_number=args.phone or "",
    )
    encoding = template_service_pb2.TextEncoding.Name(shown.encoding)
    text = f"{shown.text}\n{encoding.removeprefix('TEXT_ENCODING_')}, "
    text += f"{shown.characters} characters, {shown.segments} segment(s)"
    out.proto(shown, text)
    return 0


class _Usage(Exception):
    """A combination of arguments argparse cannot express."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgate", description="Send and follow SMS via smsgate.")
    p.add_argument("--target", help="host:port (default: SMSGATE_TARGET or 127.0.0.1:50051)")
    p.add_argument("--json", action="store_true", help="print protobuf JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def content(c: argparse.ArgumentParser) -> None:
        c.add_argument("--template", help="a template id instead of text")
        c.add_argument("--param", type=_param, action="append", default=[], metavar="K=V")
        c.add_argument("--wait", action="store_true", help="wait until terminal")
        c.add_argument("--timeout", type=float, default=60.0, help="for --wait (seconds)")

    c = sub.add_parser("send", help="send one message")
    c.add_argument("phone")
    c.add_argument("text", nargs="?")
    content(c)
    c.set_defaults(run=_send)

    c = sub.add_parser("batch", help="send to the numbers of a CSV (phone,param,...)")
    c.add_argument("file")
    c.add_argument("--text")
    c.add_argument(
        "--chunk-size",
        type=_positive,
        default=CHUNK_SIZE,
        help=f"recipients per BatchSend, a batch each (default {CHUNK_SIZE:,}, the server's "
        "default limit)",
    )
    content(c)
    c.set_defaults(run=_batch)

    c = sub.add_parser("get", help="one message with its history")
    c.add_argument("id")
    c.set_defaults(run=_get)

    c = sub.add_parser("list", help="messages, newest first")
    c.add_argument("--status", type=_status, action="append", default=[])
    c.add_argument("--phone", default="")
    c.add_argument("--batch", default="")
    c.add_argument("--limit", type=int, default=50)
    c.set_defaults(run=_list)

    c = sub.add_parser("watch", help="status events as they happen: a live table, or a line each")
    c.add_argument("--id", action="append", default=[], help="a message id (repeatable)")
    c.add_argument("--batch", default="")
    c.add_argument("--status", type=_status, action="append", default=[])
    c.add_argument("--resume-token", default="")
    c.add_argument("--token-file", help="resume from, and save each event's token to, a file")
    c.add_argument("--count", type=int, default=0, help="stop after this many events")
    c.set_defaults(run=_watch)

    c = sub.add_parser("replies", help="replies to the app as they come, a line each")
    c.add_argument("--resume-token", default="")
    c.add_argument("--token-file", help="resume from, and save each reply's token to, a file")
    c.add_argument("--count", type=int, default=0, help="stop after this many replies")
    c.set_defaults(run=_replies)

    verify = sub.add_parser("verify", help="verification codes").add_subparsers(
        dest="verify_command", required=True, metavar="generate|check"
    )
    c = verify.add_parser("generate", help="issue a code (sent by SMS unless --caller)")
    c.add_argument("phone")
    c.add_argument("--scope", required=True)
    c.add_argument("--length", type=int, default=0)
    c.add_argument("--caller", action="store_true", help="return the code instead of sending it")
    c.set_defaults(run=_verify_generate)
    c = verify.add_parser("check", help="check a code")
    c.add_argument("code")
    c.add_argument("--id", default="", help="the verification id")
    c.add_argument("--phone", default="")
    c.add_argument("--scope", default="")
    c.set_defaults(run=_verify_check)

    templates = sub.add_parser("templates", help="message templates").add_subparsers(
        dest="templates_command", required=True, metavar="list|preview"
    )
    templates.add_parser("list", help="the app's templates").set_defaults(run=_templates_list)
    c = templates.add_parser("preview", help="render a template or a body")
    c.add_argument("id", nargs="?")
    c.add_argument("--body")
    c.add_argument("--param", type=_param, action="append", default=[], metavar="K=V")
    c.add_argument("--phone", help="render for this number (sign, encoding)")
    c.set_defaults(run=_templates_preview)
    return p


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        connection = Connection.from_env(environ)
    except ValueError as exc:
        parser.error(str(exc))
    client = Client(args.target or connection.target, connection.token, tls=connection.tls)
    try:
        with client:
            code: int = args.run(client, args, Output(args.json))
            return code
    except Error as exc:
        return _print_error(exc, args.json)
    except _Usage as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
