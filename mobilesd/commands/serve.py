"""`mobilesd serve --bundle B [--port P]`: the browser client (web_app/) and a bundle on localhost.

The page is static ES modules; what it needs from a server is what `python -m http.server` does not give:
module and wasm MIME types (Chromium refuses ES modules served as text/plain and streams wasm only as
application/wasm), and the cross-origin isolation headers (COOP/COEP) without which SharedArrayBuffer, and
so LiteRT.js's threaded wasm, is unavailable. Bundle files are served with ``no-store`` so a re-export is
never hidden by a cached graph. ``WebServer`` is also what `mobilesd app web` and the LiteRT.js export
check (mobilesd/litert_js.py) serve the page from: one server, one set of headers.

Routes: ``/`` the page (web_app/), ``/bundle/...`` the bundle folder, ``/mount/<name>/...`` extra folders
(the export check's graphs and tensors). Only GET and HEAD, only files inside those folders.
"""

from __future__ import annotations

import http.server
import mimetypes
import posixpath
import threading
import urllib.parse
from pathlib import Path

from mobilesd.errors import MobileSDError

NAME = "serve"
HELP = "serve the browser client (web_app/) and a bundle on localhost"

WEB_APP = Path(__file__).resolve().parents[2] / "web_app"
LITERT_JS = WEB_APP / "node_modules" / "@litertjs" / "core" / "wasm"

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".tflite": "application/octet-stream",
    ".onnx": "application/octet-stream",
    ".bin": "application/octet-stream",
    ".f32": "application/octet-stream",
    ".i32": "application/octet-stream",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}

# cross-origin isolation: SharedArrayBuffer (threaded wasm) needs COOP same-origin + COEP require-corp
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def content_type(path: Path) -> str:
    return MIME_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def check_web_app() -> None:
    """The page needs its npm packages (LiteRT.js bundles its wasm): say how to install them."""
    if not (LITERT_JS / "litert_wasm_internal.wasm").exists():
        raise MobileSDError(f"LiteRT.js is not installed in {WEB_APP / 'node_modules'}",
                            "run: bash scripts/setup_web.sh  (npm ci in web_app/)")


def check_bundle_dir(bundle: str | Path) -> Path:
    root = Path(bundle).resolve()
    if not (root / "manifest.json").is_file():
        raise MobileSDError(f"{bundle} is not a mobilesd bundle (no manifest.json)",
                            "pass a folder written by `mobilesd export` (e.g. bundles/web)")
    return root


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "mobilesd-serve"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):   # quiet unless asked: the CLI prints the address, not every request
        if self.server.verbose:
            super().log_message(fmt, *args)

    def _resolve(self) -> tuple[Path | None, bool]:
        """(file, is_bundle_file) for the request path, or (None, _) when it is not one we serve."""
        raw = urllib.parse.urlsplit(self.path).path
        path = posixpath.normpath(urllib.parse.unquote(raw))
        parts = [p for p in path.split("/") if p]
        if any(p.startswith(".") for p in parts):      # no dotfiles, no '..'
            return None, False
        mounts = self.server.mounts
        if parts and parts[0] == "bundle":
            root, rest, is_bundle = mounts.get("bundle"), parts[1:], True
        elif len(parts) >= 2 and parts[0] == "mount":
            root, rest, is_bundle = mounts.get(f"mount/{parts[1]}"), parts[2:], True
        else:
            root, rest, is_bundle = self.server.web_root, parts, False
        if root is None:
            return None, is_bundle
        target = (root / Path(*rest)) if rest else root
        if target.is_dir():
            target = target / "index.html"
        try:
            target = target.resolve()
            target.relative_to(root)
        except (OSError, ValueError):
            return None, is_bundle
        return (target if target.is_file() else None), is_bundle

    def _send(self, head_only: bool):
        target, is_bundle = self._resolve()
        if target is None:
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in ISOLATION_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            if not head_only:
                self.wfile.write(body)
            return
        size = target.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", content_type(target))
        self.send_header("Content-Length", str(size))
        self.send_header("Cache-Control", "no-store" if is_bundle else "no-cache")
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if head_only:
            return
        with open(target, "rb") as f:
            while block := f.read(1 << 20):
                try:
                    self.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    return

    def do_GET(self):
        self._send(head_only=False)

    def do_HEAD(self):
        self._send(head_only=True)


class WebServer:
    """The page and a bundle on 127.0.0.1 in a background thread (``with WebServer(...) as s: s.url``)."""

    def __init__(self, bundle: str | Path | None = None, port: int = 0, host: str = "127.0.0.1",
                 mounts: dict[str, str | Path] | None = None, verbose: bool = False):
        check_web_app()
        self.bundle = check_bundle_dir(bundle) if bundle is not None else None
        try:
            self.httpd = http.server.ThreadingHTTPServer((host, port), _Handler)
        except OSError as exc:
            raise MobileSDError(f"cannot listen on {host}:{port}: {exc.strerror}",
                                "choose another --port (or 0 for any free port)") from exc
        self.httpd.daemon_threads = True
        self.httpd.web_root = WEB_APP.resolve()
        self.httpd.verbose = verbose
        self.httpd.mounts = {}
        if self.bundle is not None:
            self.httpd.mounts["bundle"] = self.bundle
        for name, folder in (mounts or {}).items():
            self.mount(name, folder)
        self.thread: threading.Thread | None = None

    def mount(self, name: str, folder: str | Path) -> str:
        """Serve ``folder`` under /mount/<name>/; returns that URL."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad mount name {name!r}")
        self.httpd.mounts[f"mount/{name}"] = Path(folder).resolve()
        return f"{self.url}mount/{name}/"

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "WebServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mobilesd-serve", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join(timeout=5)
            self.thread = None
        self.httpd.server_close()

    def __enter__(self) -> "WebServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def add_arguments(p) -> None:
    p.add_argument("--bundle", default=None,
                   help="bundle folder to serve at /bundle/ (without it the page asks for a folder on disk)")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    p.add_argument("--verbose", action="store_true", help="log every request")


def run(args) -> int:
    server = WebServer(args.bundle, port=args.port, verbose=args.verbose)
    url = server.url + ("?bundle=bundle/" if server.bundle else "")
    print(f"serving the mobilesd web client at {url}", flush=True)
    if server.bundle:
        print(f"  bundle {server.bundle} at {server.url}bundle/", flush=True)
    print("  open it in Chromium with WebGPU; Ctrl-C stops", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0
