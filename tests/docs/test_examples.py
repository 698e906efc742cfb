"""Every program in docs/examples runs and does what its docstring promises.

Each example is loaded from its file (docs/examples is not a package) and its
``main()`` is called with loopback addresses, free ports and short timeouts;
the assertions check the observable result (the echo is the message, the
file hashes match, the broadcast reached everyone...). Each example is also
run once as a script, the way its docstring tells a reader to, and the
Python snippets in the hand-written pages must at least parse.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import importlib.util
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stt_anyio import open_node

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.py"))
HAND_WRITTEN_PAGES = ["index.md", "quickstart.md", "concepts.md", "changelog.md",
                      *(f"guides/{p.name}" for p in sorted((DOCS / "guides").glob("*.md")))]


def load(name: str) -> ModuleType:
    """Import ``docs/examples/<name>.py`` under the module name ``docs_example_<name>``."""
    module_name = f"docs_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load docs/examples/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


# -- each example's observable result ------------------------------------------------


def test_hello_delivers_the_message() -> None:
    assert load("hello").main(timeout=10) == b"hello"


@pytest.mark.parametrize("example", ["echo_trio", "echo_asyncio", "selectors_loop"])
def test_echo_returns_the_message(example: str) -> None:
    message = f"ping from {example}".encode()
    assert load(example).main(message, timeout=5) == message


@pytest.mark.parametrize("example", ["echo_trio", "echo_asyncio"])
def test_echo_of_a_message_larger_than_a_frame(example: str) -> None:
    message = os.urandom(60_000)  # several 16 KiB frames, reassembled on each side
    assert load(example).main(message, timeout=5) == message


def test_echo_of_a_message_larger_than_the_initial_stream_credit() -> None:
    message = os.urandom(100_000)
    assert load("echo_trio").main(message, timeout=2) == message


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_file_transfer_hashes_match(tmp_path: Path, backend: str) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(1_500_000))
    out_dir = tmp_path / "received"
    out_dir.mkdir()
    result = load("file_transfer").main(source, out_dir=out_dir, backend=backend,
                                        timeout=20)
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    assert result.sent_sha256 == expected
    assert result.received_sha256 == expected
    assert result.received_path == out_dir / "payload.bin"
    assert result.received_path.read_bytes() == source.read_bytes()
    assert result.size == 1_500_000


def test_chat_relays_each_room_to_its_other_members() -> None:
    transcript = load("chat").main(timeout=10)
    lines = [(who, room, line) for who, room, line in transcript
             if not line.startswith("* welcome")]
    assert lines == [
        ("bob", "general", "alice: hi all"),
        ("alice", "random", "carol: anyone here?"),
        ("alice", "general", "bob: hello alice"),
    ]
    welcomes = [(who, room) for who, room, line in transcript if line.startswith("* welcome")]
    assert welcomes == [("alice", "general"), ("alice", "random"), ("bob", "general"),
                        ("carol", "random")]


def test_broadcast_reaches_every_listener() -> None:
    outcome = load("broadcast").main(listeners=4, message=b"to all", timeout=10)
    assert outcome.result.all_delivered
    assert len(outcome.result) == 4
    assert len(set(outcome.result.delivered)) == 4  # four distinct sessions
    assert outcome.received == {f"listener-{i}".encode(): b"to all" for i in range(4)}


def test_resume_keeps_the_session_id() -> None:
    same_id, message = load("resume_asyncio").main(timeout=5)
    assert same_id
    assert message == b"still here"


def test_simulator_example_tests_pass() -> None:
    module = load("sim_app_test")
    assert module.main(range(10, 13)) == 3 * len(module.TESTS)


def test_simulator_example_detects_a_broken_app() -> None:
    """The example's assertions have teeth: a service that mangles a reply fails."""
    module = load("sim_app_test")
    requests, expected = module.workload(5)
    _, client = module.run_service(3, requests)
    assert client.replies == expected
    assert client.replies != [*expected[:-1], b"wrong"]
    _, cut_short = module.run_service(3, requests, timeout=0.001)
    assert cut_short.replies != expected  # no reply can arrive in a millisecond


# -- each example as a script --------------------------------------------------------

SCRIPT_OUTPUT = {
    "hello.py": "b'hello'",
    "echo_trio.py": "b'hello over trio'",
    "echo_asyncio.py": "b'hello over asyncio'",
    "selectors_loop.py": "b'hello from a select loop'",
    "file_transfer.py": "OK",
    "chat.py": "[alice #general] bob: hello alice",
    "broadcast.py": "all delivered: True",
    "resume_asyncio.py": "same session id after resuming: True",
    "sim_app_test.py": "10 simulated test runs passed",
}


def test_every_example_has_an_expected_script_output() -> None:
    assert sorted(SCRIPT_OUTPUT) == EXAMPLE_FILES


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_runs_as_a_script(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # what the scripts leave lands here
    completed = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert SCRIPT_OUTPUT[name] in completed.stdout


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_docstring_says_how_to_run_it(name: str) -> None:
    module = ast.parse((EXAMPLES / name).read_text())
    docstring = ast.get_docstring(module) or ""
    assert f"docs/examples/{name}" in docstring


# -- the pages ---------------------------------------------------------------------

FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", HAND_WRITTEN_PAGES)
def test_python_snippets_in_pages_parse(page: str) -> None:
    text = (DOCS / page).read_text()
    for snippet in FENCE.findall(text):
        if snippet.lstrip().startswith("--8<--"):
            continue  # included from an example file, which the tests above run
        ast.parse(snippet)


def test_every_example_is_linked_from_a_page() -> None:
    pages = "".join((DOCS / page).read_text() for page in HAND_WRITTEN_PAGES)
    missing = [name for name in EXAMPLE_FILES if f"examples/{name}" not in pages]
    assert not missing, f"examples no page mentions: {missing}"


def test_included_sections_exist() -> None:
    """Every ``--8<-- "file:section"`` in a page names a marked section of that file."""
    include = re.compile(r'--8<-- "([^":]+)(?::([\w-]+))?"')
    for page in HAND_WRITTEN_PAGES:
        for path, section in include.findall((DOCS / page).read_text()):
            source = (ROOT / path).read_text()
            if section:
                assert f"# --8<-- [start:{section}]" in source, (page, path, section)
                assert f"# --8<-- [end:{section}]" in source, (page, path, section)


# -- the nginx configuration of guides/websocket.md ----------------------------------

NGINX = shutil.which("nginx")
PROXY_HOST = "stt.example.com"
NGINX_WRAPPER = """\
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
{site}
}}
"""


def _nginx_site(listen_port: int, backend_port: int, cert: Path, key: Path) -> str:
    """The guide's nginx block, with local ports and a throw-away certificate."""
    blocks = re.findall(r"^```nginx\n(.*?)^```", (DOCS / "guides/websocket.md").read_text(),
                        re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1
    site = str(blocks[0])
    for old, new in (("listen 443 ssl;", f"listen 127.0.0.1:{listen_port} ssl;"),
                     (f"/etc/letsencrypt/live/{PROXY_HOST}/fullchain.pem", str(cert)),
                     (f"/etc/letsencrypt/live/{PROXY_HOST}/privkey.pem", str(key)),
                     ("proxy_pass http://127.0.0.1:9000;",
                      f"proxy_pass http://127.0.0.1:{backend_port};")):
        assert old in site, f"the guide's nginx block no longer contains {old!r}"
        site = site.replace(old, new)
    return site


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for PROXY_HOST that a client can trust directly."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PROXY_HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(PROXY_HOST)]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_for_port(port: int, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
            else:
                await stream.aclose()
                return


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_nginx_block_proxies_wss_to_the_websocket_listener(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    listen_port = _free_tcp_port()
    seed = b"docs nginx test seed"

    async def run() -> bytes:
        async with open_node(node_id=b"server", shared_seed=seed, transport="websocket",
                             host="127.0.0.1", port=0) as server:
            backend = server.local_addresses["websocket"][1]
            config = tmp_path / "nginx.conf"
            config.write_text(NGINX_WRAPPER.format(
                tmp=tmp_path, site=_nginx_site(listen_port, backend, cert, key)))
            proxy = subprocess.Popen([str(NGINX), "-p", str(tmp_path), "-c", str(config),
                                      "-e", str(tmp_path / "error.log"),
                                      "-g", f"daemon off; pid {tmp_path}/nginx.pid;"])
            try:
                await _wait_for_port(listen_port, 10)
                context = ssl.create_default_context(cafile=str(cert))
                async with open_node(node_id=b"client", shared_seed=seed,
                                     transport="websocket", server_mode=False) as client:
                    session = await client.connect(
                        ("127.0.0.1", listen_port), transport="websocket", path="/stt",
                        ssl_context=context, server_hostname=PROXY_HOST,
                        peer_node_id=b"server", timeout=5)
                    await session.open_stream("via-nginx").send(b"through the proxy",
                                                                timeout=5)
                    stream = await (await server.accept(timeout=5)).accept_stream(timeout=5)
                    return await stream.receive(timeout=5)
            finally:
                proxy.terminate()
                proxy.wait(timeout=10)

    assert anyio.run(run) == b"through the proxy"
