"""A local stand-in for the Hugging Face hub: just the endpoints HfApi.create_repo and upload_folder call
(repo creation, README YAML validation, preupload, commit), every call recorded."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (method, path)
        self.repos: set[str] = set()
        self.files: dict[str, dict[str, bytes]] = {}  # repo -> path -> content
        self.tokens: list[str | None] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a):  # quiet test output
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.calls.append(("GET", self.path))
                self._reply(404, {"error": "not in the stand-in hub"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.calls.append(("POST", self.path))
                hub.tokens.append(self.headers.get("Authorization"))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    hub.repos.add(repo)
                    return self._reply(200, {"url": f"http://{self.headers['Host']}/{repo}"})
                if path == "/api/validate-yaml":
                    return self._reply(200, {})
                if path.startswith("/api/models/") and "/preupload/" in path:
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                if path.startswith("/api/models/") and "/commit/" in path:
                    repo = path[len("/api/models/"):].split("/commit/")[0]
                    for line in body.decode().splitlines():
                        op = json.loads(line)
                        if op["key"] == "file":
                            v = op["value"]
                            hub.files.setdefault(repo, {})[v["path"]] = base64.b64decode(v["content"])
                    return self._reply(200, {"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/abc",
                                             "commitOid": "a" * 40})
                return self._reply(404, {"error": f"{path} not in the stand-in hub"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
