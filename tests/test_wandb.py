"""wandb=offline: the W&B run, read back with wandb's own reader, holds the resolved config, every
number of metrics.jsonl at the same steps and the figures, without a single network use past loopback
by any process; a resumed run continues the same W&B run with each step once."""
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from importlib import metadata

import pytest

from birth.training import wandb_log
from birth.training.config import ConfigError, to_dict
from birth.training.runs import RunDir
from birth.training.validation import resolve_config, validate

# Installed as sitecustomize.py on PYTHONPATH, so that every Python process the test starts has it;
# the test process loads it too. One implementation of "past loopback" for all the checks below.
GUARD = '''"""Refuses, and records in $BIRTH_NET_LOG, every use of the network past loopback."""
import ipaddress
import os
import socket

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def local(host) -> bool:
    """A loopback address or name (None, '': the local host); any other name would be a DNS query."""
    if isinstance(host, bytes):
        host = host.decode()
    if not host or host in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def refuse(what, host, port=None):
    with open(os.environ["BIRTH_NET_LOG"], "a") as f:
        f.write(f"pid {os.getpid()}: {what} {host}:{port}\\n")
    raise OSError(f"test guard: no network past loopback: {what} {host}:{port}")


def install(set_attr=setattr) -> None:
    sock, getaddrinfo, create_connection = socket.socket, socket.getaddrinfo, socket.create_connection
    connect, connect_ex, sendto = sock.connect, sock.connect_ex, sock.sendto

    def check(what, address):
        if isinstance(address, tuple) and not local(address[0]):  # AF_UNIX addresses are paths
            refuse(what, *address[:2])

    def guarded_connect(self, address):
        check("connect", address)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        check("connect_ex", address)
        return connect_ex(self, address)

    def guarded_sendto(self, data, *args):
        check("sendto", args[-1])
        return sendto(self, data, *args)

    def guarded_getaddrinfo(host, port, *args, **kwargs):
        if not local(host):
            refuse("getaddrinfo", host, port)
        return getaddrinfo(host, port, *args, **kwargs)

    def guarded_create_connection(address, *args, **kwargs):
        check("create_connection", address)
        return create_connection(address, *args, **kwargs)

    for owner, name, fn in ((sock, "connect", guarded_connect), (sock, "connect_ex", guarded_connect_ex),
                            (sock, "sendto", guarded_sendto), (socket, "getaddrinfo", guarded_getaddrinfo),
                            (socket, "create_connection", guarded_create_connection)):
        set_attr(owner, name, fn)


if __name__ == "sitecustomize" and os.environ.get("BIRTH_NET_LOG"):
    install()
'''
# the kernel filters the calls (--seccomp-bpf): only these stop the traced processes, not every syscall
STRACE = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect,sendto,sendmsg"]
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
STRACE_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


class Trap:
    """A loopback proxy that serves nothing and records each request: the proxy variables point
    here, so an HTTP client of any process and language (wandb-core is Go) that reaches out shows up."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.hits: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.hits.append(conn.recv(200).split(b"\r\n")[0].decode(errors="replace"))
                except OSError as err:
                    self.hits.append(repr(err))


class Watch:
    """What the processes of one test did with the network: the guard's log (Python, in this process
    and in every Python child), the trap's requests (HTTP of any process) and, where strace runs, every
    connect/sendto/sendmsg system call of the whole process tree."""

    def __init__(self, tmp_path, guard, trap):
        self.log, self.guard, self.trap = tmp_path / "network.log", guard, trap
        self.trace = tmp_path / "strace.log"
        self.strace = shutil.which("strace") is not None and subprocess.run(
            [*STRACE, "-o", os.devnull, "true"], capture_output=True).returncode == 0

    def traced(self, argv: list[str]) -> list[str]:
        return [*STRACE, "-o", str(self.trace), *argv] if self.strace else argv

    def uses(self) -> list[str]:
        found = self.log.read_text().splitlines() if self.log.exists() else []
        found += [f"proxy request: {hit}" for hit in self.trap.hits]
        if self.trace.exists():
            for line in self.trace.read_text().splitlines():
                for match in STRACE_ADDRESS.finditer(line):
                    if not self.guard.local(match.group(1) or match.group(2)):
                        found.append(f"strace: {line}")
        return found


@pytest.fixture
def watch(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the W&B extra: pip install -e '.[all]'")
    folder = tmp_path / "guard"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(GUARD)
    spec = importlib.util.spec_from_file_location("net_guard", folder / "sitecustomize.py")
    guard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guard)
    trap = Trap()
    w = Watch(tmp_path, guard, trap)
    monkeypatch.setenv("BIRTH_NET_LOG", str(w.log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    for var in PROXY_VARS:
        monkeypatch.setenv(var, trap.url)
    for var in ("NO_PROXY", "no_proxy", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    # error reports on (wandb's default, and what a user may have set): offline must still send nothing
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "true")
    guard.install(monkeypatch.setattr)
    yield w
    import wandb
    wandb.teardown()  # the service this process started (birth plot, in process)
    trap.server.close()


def _env(cli) -> dict:
    return {**cli.env, **{k: os.environ[k] for k in ("BIRTH_NET_LOG", "PYTHONPATH", "WANDB_ERROR_REPORTING",
                                                      *PROXY_VARS)}}


def _numbers(row: dict) -> dict:
    """What W&B logs of a metrics.jsonl line (or holds of a history row): its numbers, by key."""
    return {k: v for k, v in row.items() if not k.startswith("_") and wandb_log._number(v)}


@pytest.mark.slow
def test_offline_run_holds_config_metrics_and_figures_and_nothing_leaves_the_machine(cli, watch, tmp_path):
    from birth.cli import main
    run = tmp_path / "run"
    proc = subprocess.run(watch.traced(cli.argv("train", *cli.tiny, "wandb=offline", "--out", str(run), "--quiet")),
                          env=_env(cli), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert main(["plot", str(run)]) == 0  # in this process: its W&B client under the monkeypatched guard
    assert watch.uses() == []

    rows = RunDir(run).read_metrics()
    assert rows[-1]["wo1_acc"] > rows[0]["wo1_acc"]  # it trained: the output matrix began to store associations
    train, figures = wandb_log.read_fragments(run)
    assert train["id"] == figures["id"] == (run / "wandb_id").read_text().strip()
    assert train["config"] == to_dict(RunDir(run).read_config())
    history = train["history"]
    assert [h["_step"] for h in history] == [r["iter"] for r in rows]
    assert [_numbers(h) for h in history] == [_numbers(r) for r in rows]  # every number of every line
    assert len(_numbers(history[-1])) > 50
    # the figures: one step after the last line, the very PNG files of RUN/figures
    (shown,) = figures["history"]
    assert shown["_step"] == rows[-1]["iter"] + 1
    for name in ("probes", "losses", "attention"):
        assert shown[f"figures/{name}._type"] == "image-file"
        data = (figures["dir"] / "files" / shown[f"figures/{name}.path"]).read_bytes()
        assert data == (run / "figures" / f"{name}.png").read_bytes()
        assert shown[f"figures/{name}.sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_resume_continues_the_same_wandb_run_and_logs_each_step_once(cli, watch, tmp_path):
    """Stopped at step 25 (SIGTERM) and resumed from the checkpoint before it (21): the lines between
    the two are computed again and must not be logged again; those after 25 continue the same W&B run.
    In this process, under the monkeypatched guard."""
    from birth.training.loop import train
    cfg = resolve_config("quick", [*cli.tiny[2:], "wandb=offline"])
    run = tmp_path / "run"

    def stop_at_24(ev):
        if ev.step == 24:
            os.kill(os.getpid(), signal.SIGTERM)  # handled between steps: a checkpoint at 25

    assert train(cfg, run, quiet=True, callbacks=[stop_at_24])["status"] == "interrupted"
    stopped, newest = RunDir(run).checkpoints()[-1]
    newest.unlink()
    resumed = RunDir(run).checkpoints()[-1][0]
    assert (resumed, stopped) == (21, 25)
    assert train(cfg, run, resume=True, quiet=True)["status"] == "completed"
    assert watch.uses() == []

    first, second = wandb_log.read_fragments(run)
    assert first["id"] == second["id"] == (run / "wandb_id").read_text().strip()
    assert first["history"][-1]["_step"] == 24 and second["history"][0]["_step"] == 28  # 24 not twice
    rows = RunDir(run).read_metrics()
    history = first["history"] + second["history"]
    assert [h["_step"] for h in history] == [r["iter"] for r in rows]
    for h, r in zip(history, rows):
        logged, line = _numbers(h), _numbers(r)
        if resumed <= r["iter"] < stopped:  # computed twice: W&B keeps the first wall time
            logged.pop("elapsed"), line.pop("elapsed")
        assert logged == line, r["iter"]


def test_without_the_package_the_config_is_refused_in_one_line(monkeypatch):
    cfg = resolve_config("quick", ["wandb=offline"])

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(wandb_log.metadata, "version", missing)
    with pytest.raises(ConfigError, match=r"^wandb=offline: needs the wandb package: pip install 'birth\[wandb\]'$"):
        validate(cfg)
    monkeypatch.setattr(wandb_log.metadata, "version", lambda name: "0.16.6")
    with pytest.raises(ConfigError, match=r"^wandb=offline: needs wandb>=0\.31, found 0\.16\.6"):
        validate(cfg)
    monkeypatch.setattr(wandb_log.metadata, "version", lambda name: "0.31.0")
    validate(cfg)
    with pytest.raises(ConfigError, match=r"^wandb: expected one of .*offline, online, got 'yes'$"):
        resolve_config("quick", ["wandb=yes"])
