"""A small client of Label Studio's REST API (the standard library's HTTP, no SDK): what the sync
needs and nothing more. Every failure is one :class:`LabelStudioError` line naming what was asked
and what came back."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from urllib.parse import urlencode, urlsplit

from datascout.exceptions import DatascoutError

TOKEN_ENV = "LABEL_STUDIO_API_KEY"
PAGE = 100


class LabelStudioError(DatascoutError):
    """Label Studio could not be reached, or answered with an error."""


def _detail(body: bytes) -> str:
    """The useful part of a Label Studio error body, on one line."""
    try:
        obj = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace")
        return " ".join(text.split())[:200] if not text.lstrip().startswith("<") else "an HTML page"
    if isinstance(obj, dict):
        parts = [str(obj.get("detail") or "")]
        errors = obj.get("validation_errors")
        if errors:
            parts.append(json.dumps(errors)[:300])
        return " ".join(p for p in parts if p) or json.dumps(obj)[:300]
    return json.dumps(obj)[:300]


class Client:
    """``Client(url, token)``: ``token`` is a legacy API token (sent as ``Token T``) or a personal
    access token (a JWT, exchanged for an access token at ``/api/token/refresh``)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LabelStudioError(f"expected Label Studio's address as http(s)://HOST:PORT but got {url!r}")
        if not token:
            raise LabelStudioError(f"a Label Studio API token is needed (its Account & Settings page); "
                                   f"give it as ${TOKEN_ENV}")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._access: str | None = None

    def _auth(self) -> str:
        if self.token.count(".") != 2:  # a legacy token
            return f"Token {self.token}"
        if self._access is None:
            self._access = self._send("POST", "/api/token/refresh", {"refresh": self.token}, auth=None)["access"]
        return f"Bearer {self._access}"

    def request(self, method: str, path: str, body=None, params: dict | None = None, *, raw: bool = False):
        return self._send(method, path + ("?" + urlencode(params) if params else ""), body, raw=raw)

    def _send(self, method, path, body=None, *, raw=False, auth="default"):
        headers = {"Accept": "application/json"}
        if auth == "default":
            headers["Authorization"] = self._auth()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        what = f"{method} {path.split('?')[0]}"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                content = r.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            hint = " (check the token)" if exc.code == 401 else ""
            raise LabelStudioError(f"Label Studio at {self.url} answered {exc.code} to {what}{hint}: "
                                   f"{_detail(body)}") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LabelStudioError(f"Label Studio at {self.url} cannot be reached ({reason})") from None
        if raw:
            return content
        try:
            return json.loads(content) if content else None
        except ValueError:
            raise LabelStudioError(f"Label Studio at {self.url} answered {what} with something that is not "
                                   "JSON (is the address Label Studio's?)") from None

    # -- what the sync uses ---------------------------------------------------------------------

    def project(self, pid: int) -> dict:
        return self.request("GET", f"/api/projects/{int(pid)}")

    def find_projects(self, title: str) -> list[dict]:
        out, page = [], 1
        while True:
            got = self.request("GET", "/api/projects", params={"title": title, "page": page, "page_size": PAGE})
            items = got.get("results", []) if isinstance(got, dict) else got
            out += [p for p in items if p.get("title") == title]
            if not isinstance(got, dict) or not got.get("next"):
                return out
            page += 1

    def create_project(self, title: str, label_config: str) -> dict:
        return self.request("POST", "/api/projects", {"title": title, "label_config": label_config})

    def update_project(self, pid: int, fields: dict) -> dict:
        return self.request("PATCH", f"/api/projects/{int(pid)}", fields)

    def users(self) -> list[dict]:
        got = self.request("GET", "/api/users")
        return got.get("results", []) if isinstance(got, dict) else got

    def tasks(self, pid: int):
        """Every task of project ``pid`` with its annotations, page by page."""
        page, seen = 1, 0
        while True:
            got = self.request("GET", "/api/tasks", params={"project": int(pid), "fields": "all", "page": page,
                                                            "page_size": PAGE})
            tasks = got.get("tasks", [])
            yield from tasks
            seen += len(tasks)
            if not tasks or seen >= int(got.get("total", 0)):
                return
            page += 1

    def import_tasks(self, pid: int, tasks: list) -> list:
        got = self.request("POST", f"/api/projects/{int(pid)}/import", tasks, params={"return_task_ids": "true"})
        return got.get("task_ids", [])

    def export(self, pid: int, export_type: str) -> bytes:
        return self.request("GET", f"/api/projects/{int(pid)}/export", params={"exportType": export_type}, raw=True)
