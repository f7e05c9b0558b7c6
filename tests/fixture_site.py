"""A web site served on 127.0.0.1 with every trap a polite crawler must handle (tests and bench/collect.py).

`FixtureSite(traps=True)` serves the cases of issue 6: robots.txt with disallowed paths and a
Crawl-delay, a redirect loop, an endless "next month" calendar, responses over the byte cap (with
and without Content-Length), wrong Content-Types, a Windows-1252 page, a truncated image, 500s, a
slow endpoint, the same image under two URLs, and pages with Creative Commons licences.
`FixtureSite(traps=False, pages=N)` serves N plain pages, each with one small image, for benchmarks.
Every answered request is logged with its arrival time (time.time()) for the tests' checks.

Traps of issue 10, served but not linked from the index (tests start at them):
`/bomb/index.html` links a decompression bomb (`Content-Encoding: gzip, gzip`, BOMB_SIZE bytes
inflated) before an image and a page; `/directives.html` and `/nofollow.html` carry robots
directives (meta and X-Robots-Tag); `/ports.html?to=PORT` links another port of 127.0.0.1.
`robots_redirect` makes /robots.txt redirect (to a URL, or through N hops on the site),
`robots_bomb` serves robots.txt as a bomb whose first line disallows /private/, and `port`
picks the port (a test can crawl a port before anything listens there).
"""
from __future__ import annotations

import functools
import gzip
import http.server
import io
import threading
import zlib
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import unquote

from PIL import Image

CAP = 64 * 1024  # the byte cap the tests configure; the big responses exceed it
BOMB_SIZE = 200 * 2**20  # what the decompression bombs inflate to


def png(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


CAT = png((200, 120, 40))
TRUNCATED = png((10, 200, 30), size=64)[:-200]


@dataclass(frozen=True)
class Request:
    at: float  # time.time() when the request arrived
    path: str  # as sent, percent-encoded
    host: str = ""  # the Host header


def _index(base: str) -> bytes:
    links = ["/gallery.html", "/private/secret.html", "/loop/a", "/calendar?month=1", "/big.html", "/data.bin",
             "/latin1.html", "/flaky.html", "/broken.html", "/slow.html", "/slow-once.html", "/cc.html",
             "http://example.com/elsewhere", "mailto:webmaster@example.com", "/cc.html#licence",
             base.replace("http://", "HTTP://") + "/./cc.html?utm_source=mail"]
    images = [("/img/cat.png", "A cat"), ("https://cdn.example.org/pic.png", ""), ("/img/truncated.png", "broken"),
              ("/img/fake.png", ""), ("/img/html.png", ""), ("/img/huge.png", "")]
    html = "<html><head><title>Fixture</title></head><body>"
    html += "".join(f'<a href="{link}">{link}</a>\n' for link in links)
    html += "".join(f'<img src="{src}" alt="{alt}">\n' for src, alt in images)
    return (html + "</body></html>").encode()


GALLERY = b"""<title>Gallery</title><img src="/mirror/cat-copy.png" alt="The same cat">
<img src="/private/hidden.png" alt="hidden"><img src="/img/linked.png" alt="Licensed by header">"""
CC_PAGE = b"""<html><head><title>Dogs and birds</title>
<link rel="license" href="https://creativecommons.org/licenses/by-sa/4.0/"></head><body>
<img src="/img/dog.png" alt="A dog">
<figure><img src="/img/bird.png" alt="A bird"><figcaption>
<a rel="license" href="https://creativecommons.org/publicdomain/zero/1.0/">CC0</a></figcaption></figure>
</body></html>"""
LATIN1 = ('<html><head><meta charset="windows-1252"><title>Caf\xe9</title></head><body>'
          '<img src="/img/caf\xe9.png" alt="Caf\xe9 cr\xe8me"><a href="/se\xf1or.html">se\xf1or</a></body></html>'
          ).encode("cp1252")


@functools.lru_cache(maxsize=4)
def gzip_bomb(size: int = BOMB_SIZE, head: bytes = b"") -> bytes:
    "`head` and then zeros up to `size` bytes, gzipped twice (a few hundred bytes; generated in 1 MiB steps)."
    squeezer, parts, zeros = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16), [], b"\0" * 2**20
    parts.append(squeezer.compress(head))
    for _ in range((size - len(head)) // len(zeros)):
        parts.append(squeezer.compress(zeros))
    return gzip.compress(b"".join(parts) + squeezer.flush(), compresslevel=9)


BOMB_PAGE = b"""<title>Bombs</title><img src="/bomb/1.png" alt="a bomb"><img src="/bomb/2.png" alt="a cat after it">
<a href="/bomb/3.html">a page after it</a>"""
DIRECTIVES_PAGE = b"""<html><head><title>Not for indexing</title><meta name="robots" content="noindex"></head><body>
<a href="/nofollow.html">links are still followed</a>
<img src="/img/noindex.png" alt="X-Robots-Tag: noindex"><img src="/img/otherbot.png" alt="for another bot">
<img src="/img/agent-none.png" alt="none, for us by name"></body></html>"""
NOFOLLOW_PAGE = b"""<title>Nofollow by header</title><a href="/never.html">never queued</a>
<img src="/img/dog.png" alt="images are still fetched">"""
ROBOTS_RULES = "User-agent: *\nDisallow: /private/\n"
CC_BY = "https://creativecommons.org/licenses/by/4.0/"
LICENCE_PAGES = {  # /licences/NAME.html: (its declarations, the images it shows)
    "index": ("", []),  # links the others
    "arr": ('<link rel="license" href="/rights.html">', ["arr"]),  # a link to "All rights reserved"
    "conflict": (f'<link rel="license" href="{CC_BY}"><meta name="dc.rights" content="CC BY-NC 4.0">', ["conflict"]),
    "a": (f'<link rel="license" href="{CC_BY}">', ["shared"]),  # one image, two pages, two claims
    "b": ('<meta name="dcterms.license" content="CC BY-NC-SA 4.0">', ["shared"]),
    "pd": ('<meta name="dcterms.license" content="https://creativecommons.org/publicdomain/mark/1.0/">', ["pd"]),
}


class FixtureSite:
    "A threaded HTTP server on 127.0.0.1 with a request log; use as a context manager."

    def __init__(self, traps: bool = True, pages: int = 0, crawl_delay: float | None = 0.02,
                 latency: float = 0.0,  # seconds every answer waits (makes concurrency visible)
                 slow_seconds: float = 1.0,  # how long /slow.html takes
                 port: int = 0,  # 0: any free port
                 robots_redirect: str | int | None = None,  # /robots.txt redirects to this URL, or through N hops
                 robots_bomb: bool = False):  # /robots.txt is a decompression bomb (its first line still counts)
        self.traps, self.pages, self.crawl_delay = traps, pages, crawl_delay
        self.latency, self.slow_seconds = latency, slow_seconds
        self.robots_redirect, self.robots_bomb = robots_redirect, robots_bomb
        self._robots_bomb = gzip_bomb(BOMB_SIZE, self._robots_text().encode()) if robots_bomb else None
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms stalls

            def do_GET(self):
                site._answer(self)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # clients hang up on purpose (byte caps)
                pass

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_port
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FixtureSite:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        with self._lock:
            return [request.path for request in self.log]

    def hosts(self) -> list[str]:
        with self._lock:
            return [request.host for request in self.log]

    def times(self) -> list[float]:
        with self._lock:
            return sorted(request.at for request in self.log)

    # --- answers -----------------------------------------------------------------------------
    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.log.append(Request(time.time(), handler.path, handler.headers.get("Host", "")))
            self._counts[handler.path] += 1
            count = self._counts[handler.path]
        if self.latency:
            time.sleep(self.latency)
        path, _, query = unquote(handler.path).partition("?")
        if path == "/robots.txt" or path.startswith("/robots-hop/"):
            return self._robots(handler, path)
        if path.startswith("/pages/"):
            return self._page(handler, path)
        if not self.traps:
            if path == "/":
                return self._send(handler, 200, "text/html", b'<a href="/pages/0.html">start</a>')
            return self._send(handler, 404, "text/plain", b"")
        return self._trap(handler, path, query, count)

    def _robots(self, handler, path: str) -> None:
        hops_left = int(path.removeprefix("/robots-hop/")) if path.startswith("/robots-hop/") else self.robots_redirect
        if isinstance(hops_left, str):
            return self._send(handler, 301, "text/plain", b"", {"Location": hops_left})
        if isinstance(hops_left, int) and hops_left > 0:
            return self._send(handler, 301, "text/plain", b"", {"Location": f"/robots-hop/{hops_left - 1}"})
        if self._robots_bomb:
            return self._send(handler, 200, "text/plain", self._robots_bomb, {"Content-Encoding": "gzip, gzip"})
        return self._send(handler, 200, "text/plain", self._robots_text().encode())

    def _robots_text(self) -> str:
        return ROBOTS_RULES + (f"Crawl-delay: {self.crawl_delay}\n" if self.crawl_delay else "")

    def _page(self, handler, path: str) -> None:
        name = path.removeprefix("/pages/")
        number = int(name.split(".")[0]) if name.split(".")[0].isdigit() else -1
        if not 0 <= number < self.pages:
            return self._send(handler, 404, "text/plain", b"")
        if name.endswith(".png"):
            return self._send(handler, 200, "image/png", png((number % 256, number // 256 % 256, 7), size=4))
        children = [child for child in (2 * number + 1, 2 * number + 2) if child < self.pages]
        html = f"<title>Page {number}</title><img src='/pages/{number}.png' alt='picture {number}'>"
        html += "".join(f"<a href='/pages/{child}.html'>{child}</a>" for child in children)
        return self._send(handler, 200, "text/html", html.encode())

    def _trap(self, handler, path: str, query: str, count: int) -> None:
        html = "text/html"
        fixed = {
            "/": (html, _index(self.base)), "/gallery.html": (html, GALLERY), "/cc.html": (html, CC_PAGE),
            "/latin1.html": ("text/html", LATIN1), "/señor.html": (html, b"<title>Se\xc3\xb1or</title>"),
            "/private/secret.html": (html, b"secret"), "/private/hidden.png": ("image/png", CAT),
            "/img/cat.png": ("image/png", CAT), "/mirror/cat-copy.png": ("image/png", CAT),
            "/img/dog.png": ("image/png", png((90, 90, 90))), "/img/bird.png": ("image/png", png((0, 0, 250))),
            "/img/café.png": ("image/png", png((250, 250, 0))), "/img/truncated.png": ("image/png", TRUNCATED),
            "/img/fake.png": ("text/plain", CAT), "/img/html.png": ("image/png", b"<html>not found</html>"),
            "/data.bin": ("application/octet-stream", b"\x00" * 100),
            "/big.html": (html, b"<p>" + b"x" * (CAP * 3) + b"</p>"),
            "/bomb/index.html": (html, BOMB_PAGE), "/bomb/2.png": ("image/png", CAT),
            "/bomb/3.html": (html, b"<title>After the bomb</title>"),
            "/directives.html": (html, DIRECTIVES_PAGE), "/never.html": (html, b"never"),
            "/rights.html": (html, b"<p>All rights reserved.</p>"),
        }
        if path in fixed:
            return self._send(handler, 200, *fixed[path])
        robots_tags = {"/img/noindex.png": "noindex", "/img/otherbot.png": "otherbot: noindex",
                       "/img/agent-none.png": "fsml_nb-crawler: none", "/nofollow.html": "nofollow"}
        if path in robots_tags:
            media_type, body = (html, NOFOLLOW_PAGE) if path.endswith(".html") else ("image/png", png((7, 7, len(path))))
            return self._send(handler, 200, media_type, body, {"X-Robots-Tag": robots_tags[path]})
        if path.startswith("/licences/"):
            return self._licence_page(handler, path.removeprefix("/licences/"))
        if path == "/bomb/1.png":
            return self._send(handler, 200, "image/png", gzip_bomb(), {"Content-Encoding": "gzip, gzip"})
        if path == "/ports.html":
            port = query.removeprefix("to=")
            return self._send(handler, 200, html, f'<a href="http://127.0.0.1:{port}/">another port</a>'.encode())
        if path == "/img/linked.png":
            return self._send(handler, 200, "image/png", png((1, 2, 3)),
                              {"Link": '<https://creativecommons.org/licenses/by/4.0/>; rel="license"'})
        if path in ("/loop/a", "/loop/b"):
            return self._send(handler, 302, "text/plain", b"", {"Location": "/loop/b" if path == "/loop/a" else "/loop/a"})
        if path == "/calendar":
            month = int(query.removeprefix("month=") or 0)
            return self._send(handler, 200, html, f'<a href="/calendar?month={month + 1}">next</a>'.encode())
        if path == "/img/huge.png":
            return self._stream_forever(handler)
        if path == "/flaky.html":
            return self._send(handler, 500 if count <= 2 else 200, html, b"<title>Flaky</title>")
        if path == "/busy.html":  # 503 with Retry-After once, then fine
            if count == 1:
                return self._send(handler, 503, html, b"busy", {"Retry-After": "1"})
            return self._send(handler, 200, html, b"<title>Not busy now</title>")
        if path == "/broken.html":
            return self._send(handler, 500, html, b"<p>server error</p>")
        if path in ("/slow.html", "/slow-once.html"):
            if path == "/slow.html" or count == 1:
                time.sleep(self.slow_seconds)
            return self._send(handler, 200, html, b"<title>Slow</title>")
        return self._send(handler, 404, "text/plain", b"")

    def _licence_page(self, handler, name: str) -> None:
        stem, _, extension = name.partition(".")
        if extension == "png" and any(stem in shown for _, shown in LICENCE_PAGES.values()):
            return self._send(handler, 200, "image/png", png((len(stem), 99, sum(map(ord, stem)) % 256)))
        if extension != "html" or stem not in LICENCE_PAGES:
            return self._send(handler, 404, "text/plain", b"")
        declarations, shown = LICENCE_PAGES[stem]
        links = "".join(f'<a href="/licences/{other}.html">{other}</a>' for other in LICENCE_PAGES if stem == "index")
        images = "".join(f'<img src="/licences/{image}.png" alt="{image} image">' for image in shown)
        return self._send(handler, 200, "text/html", f"<head>{declarations}</head><body>{links}{images}</body>".encode())

    @staticmethod
    def _send(handler, status: int, media_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", media_type)
            handler.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _stream_forever(handler) -> None:
        "An image with no Content-Length that never ends (up to 4 caps' worth); the crawler must cut it."
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(CAT)
            for _ in range(4 * CAP // 4096):
                handler.wfile.write(b"\x00" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass
        handler.close_connection = True
