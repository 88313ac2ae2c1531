"""The ``smsgate`` command (the client's CLI) as a real process against a live
server: each command's output, ``--json``, errors with their reason and field
violations, and exit codes per class of failure; on a (pseudo-)terminal, the
progress bar and tables of its rich extra, and the plain fallback without it."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import smsgate
from smsgate.cli import EXIT_CODES
from smsgate.v1 import template_service_pb2
from smsgate_server.runtime import Running

NUMBER = "+14155550123"
# Terminal control sequences (colours, cursor moves), removed before checking text.
ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[=>])")
# The CLI with rich made unimportable, as when the cli extra is not installed.
WITHOUT_RICH = (
    "import sys; sys.modules['rich'] = None; from smsgate.cli import main; sys.exit(main())"
)
CLIENT_PYPROJECT = Path(__file__).resolve().parent.parent / "clients/python/pyproject.toml"


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


@dataclass(frozen=True)
class Cli:
    """Runs ``python -m smsgate`` (what the console script runs) as the app of ``token``."""

    target: str
    token: str

    async def __call__(self, *args: str, timeout: float = 30.0) -> Ran:
        env = {**os.environ, "SMSGATE_TARGET": self.target, "SMSGATE_TOKEN": self.token}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "smsgate",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return Ran(proc.returncode, out.decode(), err.decode())


@dataclass(frozen=True)
class Terminal:
    """Runs the CLI with a pseudo-terminal as stdin, stdout and stderr, as a
    person at a terminal would: 120 columns wide."""

    cli: Cli

    def run(self, args: list[str], timeout: float) -> Ran:
        env = {**os.environ, "SMSGATE_TARGET": self.cli.target, "SMSGATE_TOKEN": self.cli.token}
        env |= {"TERM": "xterm-256color", "PYTHONIOENCODING": "utf-8"}
        env.pop("NO_COLOR", None)
        main, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
        process = subprocess.Popen(args, stdin=child, stdout=child, stderr=child, env=env)
        os.close(child)
        chunks = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([main], [], [], deadline - time.monotonic())
                if not ready:
                    break
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: the child's side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            code = process.wait(timeout=5)
        finally:
            process.kill()
            os.close(main)
        text = ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r\n", "\n")
        return Ran(code, text, "")

    async def __call__(self, *args: str, rich: bool = True, timeout: float = 30.0) -> Ran:
        start = ["-m", "smsgate"] if rich else ["-c", WITHOUT_RICH]
        return await asyncio.to_thread(self.run, [sys.executable, *start, *args], timeout)


@pytest.fixture
async def cli(server: Running) -> Cli:
    token = (await server.apps.create("cli-test")).token
    return Cli(f"127.0.0.1:{server.grpc_port}", token)


def test_the_console_script_runs_the_cli() -> None:
    project = tomllib.loads(CLIENT_PYPROJECT.read_text())
    assert project["project"]["scripts"] == {"smsgate": "smsgate.cli:main"}


async def test_send_with_wait_prints_the_delivered_message_and_get_reads_it(cli: Cli) -> None:
    sent = await cli("send", NUMBER, "hello from the shell", "--wait")
    assert sent.code == 0, sent.stderr
    message_id, status, number = sent.stdout.split()[:3]
    assert (status, number) == ("DELIVERED", NUMBER)

    got = await cli("--json", "get", message_id)
    assert got.code == 0, got.stderr
    body = got.json()
    assert isinstance(body, dict)
    assert (body["id"], body["status"]) == (message_id, "MESSAGE_STATUS_DELIVERED")
    assert [h["status"] for h in body["history"]][-1] == "MESSAGE_STATUS_DELIVERED"


async def test_list_prints_a_json_line_per_message(cli: Cli) -> None:
    for text in ("one", "two"):
        assert (await cli("send", NUMBER, text)).code == 0
    listed = await cli("--json", "list", "--phone", NUMBER)
    assert listed.code == 0, listed.stderr
    texts = [json.loads(line)["text"] for line in listed.stdout.splitlines()]
    assert texts == ["two", "one"]  # newest first


async def test_a_bad_number_prints_its_reason_and_field_and_exits_3(cli: Cli) -> None:
    failed = await cli("send", "12", "hi")
    assert failed.code == EXIT_CODES[smsgate.InvalidArgument.code] == 3
    assert failed.stdout == ""
    assert "INVALID_ARGUMENT: INVALID_PHONE_NUMBER" in failed.stderr
    assert "  phone_number: " in failed.stderr

    as_json = await cli("--json", "send", "12", "hi")
    error = json.loads(as_json.stderr)
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "INVALID_PHONE_NUMBER")
    assert [v["field"] for v in error["field_violations"]] == ["phone_number"]


async def test_an_unknown_message_exits_4_and_a_wrong_token_5(cli: Cli) -> None:
    missing = await cli("get", "nope")
    assert missing.code == 4, missing.stderr
    assert "NOT_FOUND" in missing.stderr
    stranger = Cli(cli.target, cli.token.split(".")[0] + ".wrong")
    refused = await stranger("get", "nope")
    assert refused.code == 5, refused.stderr
    assert "UNAUTHENTICATED" in refused.stderr


async def test_batch_from_csv_summarises_accepted_rejected_and_delivered(
    cli: Cli, tmp_path: Path
) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("phone\n+14155550101\n+14155550102\n12\n")
    ran = await cli("batch", str(csv), "--text", "hi all", "--wait")
    assert ran.code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("  rejected 12: INVALID_PHONE_NUMBER")
    assert lines[-1].endswith(": 2 accepted, 1 rejected, 2 delivered, 0 not delivered")


async def test_a_long_csv_goes_as_several_batches_summed_up(cli: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("phone\n+14155550101\n+14155550102\n12\n+14155550104\n+14155550105\n")

    ran = await cli("batch", str(csv), "--text", "hi all", "--wait", "--chunk-size", "2")

    assert ran.code == 0, ran.stderr
    batches, summary = ran.stdout.splitlines()[-1].split(": ")
    assert len(batches.removeprefix("batch ").split(", ")) == 3
    assert summary == "4 accepted, 1 rejected, 4 delivered, 0 not delivered"

    as_json = await cli("--json", "batch", str(csv), "--text", "again", "--chunk-size", "2")
    body = as_json.json()
    assert isinstance(body, dict)
    assert [b["accepted_count"] for b in body["batches"]] == [2, 1, 1]
    assert (body["accepted_count"], body["rejected_count"]) == (4, 1)

    zero = await cli("batch", str(csv), "--text", "x", "--chunk-size", "0")
    assert zero.code == 2
    assert "'0' is not a positive whole number" in zero.stderr


async def test_batch_with_per_recipient_params_fills_the_template(
    cli: Cli, server: Running, tmp_path: Path
) -> None:
    async with smsgate.AsyncClient(cli.target, cli.token) as client:
        await client.create_template(
            "Hi {name}", kind=template_service_pb2.TEMPLATE_KIND_NOTIFICATION, template_id="hi"
        )
    csv = tmp_path / "people.csv"
    csv.write_text("phone,name\n+14155550101,Ann\n+14155550102,Bo\n")
    ran = await cli("--json", "batch", str(csv), "--template", "hi")
    assert ran.code == 0, ran.stderr
    body = ran.json()
    assert isinstance(body, dict)
    assert body["accepted_count"] == 2
    listed = await cli("--json", "list", "--batch", body["batch_id"])
    texts = sorted(json.loads(line)["rendered_text"] for line in listed.stdout.splitlines())
    assert texts == ["Hi Ann", "Hi Bo"]


async def test_watch_by_id_opens_with_the_snapshot_of_a_delivered_message(cli: Cli) -> None:
    sent = await cli("send", NUMBER, "done already", "--wait")
    message_id = sent.stdout.split()[0]
    watched = await cli("watch", "--id", message_id, "--count", "1")
    assert watched.code == 0, watched.stderr
    assert watched.stdout.split()[2:] == [message_id, "DELIVERED", "(snapshot)"]

    as_json = await cli("--json", "watch", "--id", message_id, "--count", "1")
    event = json.loads(as_json.stdout)
    assert (event["status"], event["snapshot"]) == ("MESSAGE_STATUS_DELIVERED", True)


async def test_verify_generate_then_check(cli: Cli) -> None:
    made = await cli("--json", "verify", "generate", NUMBER, "--scope", "login", "--caller")
    assert made.code == 0, made.stderr
    issued = made.json()
    assert isinstance(issued, dict)
    wrong = await cli("verify", "check", "000000x", "--id", issued["verification_id"])
    assert wrong.code == 1
    assert wrong.stdout.startswith("INCORRECT")
    right = await cli("verify", "check", issued["code"], "--id", issued["verification_id"])
    assert (right.code, right.stdout.strip()) == (0, "VERIFIED")


async def test_templates_list_and_preview(cli: Cli) -> None:
    async with smsgate.AsyncClient(cli.target, cli.token) as client:
        await client.create_template(
            "Order {order} has shipped",
            kind=template_service_pb2.TEMPLATE_KIND_NOTIFICATION,
            template_id="shipped",
        )
    listed = await cli("templates", "list")
    assert listed.stdout.split()[:3] == ["shipped", "v1", "NOTIFICATION"]
    shown = await cli("templates", "preview", "shipped", "--param", "order=42", "--phone", NUMBER)
    assert shown.code == 0, shown.stderr
    text, summary = shown.stdout.splitlines()
    assert text == "Order 42 has shipped"
    assert summary == "GSM7, 20 characters, 1 segment(s)"


async def test_usage_errors_exit_2(cli: Cli) -> None:
    both = await cli("send", NUMBER, "text", "--template", "t")
    assert both.code == 2
    assert "give either TEXT or --template" in both.stderr


@pytest.fixture
def terminal(cli: Cli) -> Terminal:
    return Terminal(cli)


async def test_batch_on_a_terminal_shows_progress_and_summary_tables(
    terminal: Terminal, tmp_path: Path
) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("phone\n+14155550101\n+14155550102\n12\n")

    ran = await terminal("batch", str(csv), "--text", "hi all", "--wait")

    assert ran.code == 0, ran.stdout
    assert re.search(r"waiting.*2/2.*2 delivered", ran.stdout), ran.stdout
    assert "Rejected recipients" in ran.stdout
    assert re.search(r"12\s*[│┃|]\s*INVALID_PHONE_NUMBER", ran.stdout), ran.stdout
    bar = r"\s*[│┃|]\s*"
    header = bar.join(["accepted", "rejected", "delivered", "not delivered"])
    assert re.search(header, ran.stdout), ran.stdout
    assert re.search(bar + bar.join("2120") + bar, ran.stdout), ran.stdout


async def test_a_long_csv_on_a_terminal_shows_its_sending_progress(
    terminal: Terminal, tmp_path: Path
) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("phone\n+14155550101\n+14155550102\n12\n+14155550104\n+14155550105\n")

    ran = await terminal("batch", str(csv), "--text", "hi all", "--chunk-size", "2")

    assert ran.code == 0, ran.stdout
    assert re.search(r"sending.*5/5.*4 accepted, 1 rejected", ran.stdout), ran.stdout
    plain = await terminal("batch", str(csv), "--text", "hi", "--chunk-size", "2", rich=False)
    assert "\r5/5 sent (4 accepted, 1 rejected)" in plain.stdout, plain.stdout


async def test_batch_on_a_terminal_without_rich_counts_on_one_line(
    terminal: Terminal, tmp_path: Path
) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("phone\n+14155550101\n+14155550102\n12\n")

    ran = await terminal("batch", str(csv), "--text", "hi all", "--wait", rich=False)

    assert ran.code == 0, ran.stdout
    assert "\r2/2 done (2 delivered)" in ran.stdout
    assert "  rejected 12: INVALID_PHONE_NUMBER" in ran.stdout
    assert ": 2 accepted, 1 rejected, 2 delivered, 0 not delivered" in ran.stdout
    assert "│" not in ran.stdout and "━" not in ran.stdout


async def test_watch_on_a_terminal_is_a_live_table(cli: Cli, terminal: Terminal) -> None:
    sent = await cli("send", NUMBER, "done already", "--wait")
    message_id = sent.stdout.split()[0]

    ran = await terminal("watch", "--id", message_id, "--count", "1")

    assert ran.code == 0, ran.stdout
    assert "watch: 1 events" in ran.stdout
    row = rf"{message_id}\s*[│┃|]\s*DELIVERED \(snapshot\)\s*[│┃|]\s*\d{{4}}-\d\d-\d\d"
    assert re.search(row, ran.stdout), ran.stdout


async def test_watch_on_a_terminal_without_rich_prints_lines(cli: Cli, terminal: Terminal) -> None:
    sent = await cli("send", NUMBER, "done already", "--wait")
    message_id = sent.stdout.split()[0]

    ran = await terminal("watch", "--id", message_id, "--count", "1", rich=False)

    assert ran.code == 0, ran.stdout
    assert ran.stdout.split()[2:] == [message_id, "DELIVERED", "(snapshot)"]
