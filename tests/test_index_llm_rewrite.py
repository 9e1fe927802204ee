"""LLM rewrite against a fake OpenAI-compatible server on loopback: answers, cache, retries, errors."""

import http.server
import json
import socket
import threading

import pytest

from gream_jax.data.types import ItemText
from gream_jax.index import llm_rewrite


class _Handler(http.server.BaseHTTPRequestHandler):
    calls = []
    fail_first = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        user = body["messages"][-1]["content"]
        title = user.split("Title: ")[1].split("\n")[0]
        answer = {"choices": [{"message": {"content": f"  rewritten   {title} "}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.calls, _Handler.fail_first = [], 0
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


ITEMS = [ItemText(title="Lipstick", description="red", reviews=["short", "This lipstick lasts all day long."]),
         ItemText(title="Cream", description="")]


def test_rewrite_and_cache(server, tmp_path):
    cache = str(tmp_path / "rewrite.jsonl")
    client = llm_rewrite.ChatClient(server, model="fake", backoff_s=0.01)
    out = llm_rewrite.rewrite_descriptions(ITEMS, client, cache)
    assert out == ["rewritten Lipstick", "rewritten Cream"]
    assert len(_Handler.calls) == 2
    user = _Handler.calls[0]["messages"][-1]["content"]
    assert "Review 1: This lipstick lasts all day long." in user and "short" not in user
    again = llm_rewrite.rewrite_descriptions(ITEMS, client, cache)
    assert again == out and len(_Handler.calls) == 2          # served from the cache


def test_retries_on_server_errors(server, tmp_path):
    _Handler.fail_first = 2
    client = llm_rewrite.ChatClient(server, retries=3, backoff_s=0.01)
    assert llm_rewrite.rewrite_descriptions(ITEMS[:1], client, "") == ["rewritten Lipstick"]
    assert len(_Handler.calls) == 3


def test_unreachable_is_a_clear_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                    # nothing listens there now
    client = llm_rewrite.ChatClient(f"http://127.0.0.1:{port}/v1", retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(llm_rewrite.LLMRewriteError, match=r"llm_rewrite_url=.*unreachable after 2 tries"):
        client.complete(llm_rewrite.build_messages("t", "", []))
