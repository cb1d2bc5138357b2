"""Oversized uploads get the 413 whatever the client: also Python's urllib, which reads the answer only
after sending the whole body (a server that answers and closes early cuts it off with a reset)."""

from __future__ import annotations

import collections
import json
import re
import socket
import urllib.error
import urllib.request

import httpx
import pytest
from serve_helpers import encode, scene

LIMIT = 1024 * 1024  # server_url's max_upload_mb=1.0
MESSAGE = f"the request body exceeds the server's upload limit of {LIMIT} bytes (max_upload_mb); send a smaller image"
BOUNDARY = "b0undary"


def multipart(payload_bytes: int) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
    head += "Content-Type: image/png\r\n\r\n"
    return head.encode() + encode(scene(64, 48), "PNG") + b"\0" * payload_bytes + f"\r\n--{BOUNDARY}--\r\n".encode()


def urllib_post(url: str, body: bytes, chunked: bool) -> tuple[int, dict]:
    """POST with the standard library; `chunked`: the body as an iterable, which urllib sends with
    `Transfer-Encoding: chunked` and no Content-Length."""
    data = (body[i : i + 65536] for i in range(0, len(body), 65536)) if chunked else body
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("megabytes", [1.01, 6, 25])
def test_urllib_gets_the_413_for_oversized_bodies(server_url, megabytes, chunked):
    status, body = urllib_post(server_url + "/v1/detect", multipart(int(megabytes * LIMIT)), chunked)
    assert (status, body) == (413, {"detail": MESSAGE})


def test_urllib_gets_the_413_on_explain_and_the_server_keeps_serving(server_url):
    assert urllib_post(server_url + "/v1/explain", multipart(8 * LIMIT), chunked=False) == (413, {"detail": MESSAGE})
    good = httpx.post(server_url + "/v1/detect", files={"image": ("ok.png", encode(scene(64, 48), "PNG"))}, timeout=60)
    assert good.status_code == 200, good.text


def raw_exchange(url: str, head: str) -> bytes:
    """Send only the request head (no body) on a raw socket; everything the server sends until it closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head.encode())
        answer = b""
        while chunk := connection.recv(65536):  # ends when the server closes; recv times out after 30 s
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "declared, expect",
    [(25 * LIMIT, True), (10 * 1024**3, False)],  # waits for 100 Continue; far beyond what is read and dropped
    ids=["expect-100-continue", "beyond-the-discard-cap"],
)
def test_a_body_that_will_not_be_read_is_answered_before_it_is_sent(server_url, declared, expect):
    head = (
        "POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {declared}\r\n"
        + ("Expect: 100-continue\r\n" if expect else "")
        + "\r\n"
    )
    answer = raw_exchange(server_url, head)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]  # no "100 Continue" first: the body is not wanted
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"detail": MESSAGE}


def counted(url: str) -> collections.Counter[tuple[str, str]]:
    """deformable_detr_requests_total by (endpoint, status), from /metrics."""
    pattern = r'^deformable_detr_requests_total\{endpoint="([^"]*)",status="(\d+)"\} (\d+)$'
    found = re.findall(pattern, httpx.get(url + "/metrics").text, flags=re.MULTILINE)
    return collections.Counter({(endpoint, status): int(count) for endpoint, status, count in found})


def test_413s_are_counted_under_the_endpoint_they_were_for(server_url):
    before = counted(server_url)
    for chunked in (False, True):
        assert urllib_post(server_url + "/v1/detect", multipart(2 * LIMIT), chunked)[0] == 413
    assert urllib_post(server_url + "/v1/explain", multipart(2 * LIMIT), chunked=False)[0] == 413
    files = {"image": ("big.png", b"\0" * 2 * LIMIT)}
    assert httpx.post(server_url + "/v1/detect", files=files, timeout=60).status_code == 413
    head = f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * LIMIT}\r\nExpect: 100-continue\r\n\r\n"
    assert raw_exchange(server_url, head).startswith(b"HTTP/1.1 413 ")
    assert httpx.get(server_url + "/static/app.js").status_code == 200
    assert httpx.get(server_url + "/v1/nothing").status_code == 404
    assert counted(server_url) - before == {
        ("/v1/detect", "413"): 4,
        ("/v1/explain", "413"): 1,
        ("/static", "200"): 1,
        ("other", "404"): 1,  # no such route
        ("/metrics", "200"): 1,  # the first look
    }
