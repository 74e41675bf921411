"""A loopback server for the OpenAI Files and Batches endpoints, as the OpenAI API reference documents them.

    POST /v1/files                 multipart: file, purpose=batch       -> File object
    GET  /v1/files/{id}            -> File object
    GET  /v1/files/{id}/content    -> the file's bytes
    POST /v1/batches               {input_file_id, endpoint, completion_window, metadata?} -> Batch object
    GET  /v1/batches/{id}          -> Batch object (validating -> in_progress -> completed on successive polls)
    POST /v1/batches/{id}/cancel   -> Batch object (cancelled)

Every request needs `Authorization: Bearer <key>`. When a batch is polled in progress, each input
line is answered by `answer(body) -> (status_code, response body)` (the tests pass one that calls a
real llama.cpp server, or replays recorded answers) and the output and error files are written in
the documented line formats:

    {"id": "batch_req_...", "custom_id": ..., "response": {"status_code": 200, "request_id": ..., "body": ...}, "error": null}
    {"id": "batch_req_...", "custom_id": ..., "response": {"status_code": 4xx, ...}, "error": null}   (error file)
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


class BatchAPI:
    """State of the fake API: files and batches in memory."""

    def __init__(self, answer: Answer, key: str = "sk-test") -> None:
        self.answer = answer
        self.key = key
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.lock = threading.Lock()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def add_file(self, name: str, purpose: str, data: bytes) -> dict[str, Any]:
        file_id = self.new_id("file-")
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[file_id] = (meta, data)
        return meta

    def create_batch(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        input_id = payload.get("input_file_id")
        if input_id not in self.files:
            return 400, {"error": {"message": f"No such file: {input_id}", "type": "invalid_request_error"}}
        if payload.get("endpoint") != "/v1/chat/completions" or payload.get("completion_window") != "24h":
            return 400, {
                "error": {"message": "unsupported endpoint or completion_window", "type": "invalid_request_error"}
            }
        batch_id = self.new_id("batch_")
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": payload["endpoint"],
            "errors": None,
            "input_file_id": input_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "in_progress_at": None,
            "expires_at": int(time.time()) + 86400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": payload.get("metadata"),
        }
        self.batches[batch_id] = batch
        return 200, batch

    def advance(self, batch: dict[str, Any]) -> None:
        """One step per poll: validating -> in_progress -> (run every line) completed."""
        if batch["status"] == "validating":
            batch["status"] = "in_progress"
            batch["in_progress_at"] = int(time.time())
            return
        if batch["status"] != "in_progress":
            return
        lines = self.files[batch["input_file_id"]][1].decode().splitlines()
        outputs, errors = [], []
        for line in lines:
            if not line.strip():
                continue
            request = json.loads(line)
            status, body = self.answer(request["body"])
            row = {
                "id": self.new_id("batch_req_"),
                "custom_id": request["custom_id"],
                "response": {"status_code": status, "request_id": self.new_id("req_"), "body": body},
                "error": None,
            }
            (outputs if status == 200 else errors).append(json.dumps(row))
        batch["request_counts"] = {
            "total": len(outputs) + len(errors),
            "completed": len(outputs),
            "failed": len(errors),
        }
        if outputs:
            batch["output_file_id"] = self.add_file(f"{batch['id']}_output.jsonl", "batch_output", _jsonl(outputs))[
                "id"
            ]
        if errors:
            batch["error_file_id"] = self.add_file(f"{batch['id']}_error.jsonl", "batch_output", _jsonl(errors))["id"]
        batch["status"] = "completed"
        batch["finalizing_at"] = batch["completed_at"] = int(time.time())


def _jsonl(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def make_handler(api: BatchAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {api.key}":
                return True
            self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return False

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if not self._authorised():
                return
            body = self._body()
            with api.lock:
                if self.path == "/v1/files":
                    message = BytesParser(policy=default_policy).parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body
                    )
                    parts = {
                        part.get_param("name", header="content-disposition"): part for part in message.iter_parts()
                    }
                    if "file" not in parts or "purpose" not in parts:
                        self._send(400, {"error": {"message": "file and purpose are required"}})
                        return
                    meta = api.add_file(
                        parts["file"].get_filename() or "upload.jsonl",
                        parts["purpose"].get_content().strip(),
                        parts["file"].get_payload(decode=True),
                    )
                    self._send(200, meta)
                elif self.path == "/v1/batches":
                    self._send(*api.create_batch(json.loads(body or b"{}")))
                elif self.path.startswith("/v1/batches/") and self.path.endswith("/cancel"):
                    batch = api.batches.get(self.path.split("/")[3])
                    if batch is None:
                        self._send(404, {"error": {"message": "No such batch"}})
                        return
                    batch["status"] = "cancelled"
                    batch["cancelled_at"] = int(time.time())
                    self._send(200, batch)
                else:
                    self._send(404, {"error": {"message": f"unknown endpoint {self.path}"}})

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if not self._authorised():
                return
            parts = self.path.strip("/").split("/")
            with api.lock:
                if parts[:2] == ["v1", "files"] and len(parts) in (3, 4):
                    found = api.files.get(parts[2])
                    if found is None:
                        self._send(404, {"error": {"message": f"No such File object: {parts[2]}"}})
                    elif len(parts) == 4 and parts[3] == "content":
                        self._send(200, None, raw=found[1])
                    else:
                        self._send(200, found[0])
                elif parts[:2] == ["v1", "batches"] and len(parts) == 3:
                    batch = api.batches.get(parts[2])
                    if batch is None:
                        self._send(404, {"error": {"message": f"No such batch: {parts[2]}"}})
                        return
                    api.advance(batch)
                    self._send(200, batch)
                else:
                    self._send(404, {"error": {"message": f"unknown endpoint {self.path}"}})

    return Handler


def serve(answer: Answer, key: str = "sk-test") -> tuple[ThreadingHTTPServer, BatchAPI, str]:
    """Start the server on a free loopback port in a thread; returns it, its state and its base URL (…/v1)."""
    api = BatchAPI(answer, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(api))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, api, f"http://127.0.0.1:{server.server_address[1]}/v1"
