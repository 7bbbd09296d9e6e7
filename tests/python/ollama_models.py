"""The `ollama` Python client (0.6.x, unmodified) against a real llm-node.

Usage: ollama_models.py BASE_URL MODEL GGUF

A plain-HTTP fake registry on loopback (Docker registry v2 subset: manifest
by tag, blobs by digest with Range) serves GGUF as `library/tiny:v1`; the
client pulls it with `insecure=True` (and fails without), then lists, shows,
copies, deletes, asks the version, and embeds with MODEL (a batch,
`dimensions`, an input longer than the context with and without `truncate`,
and the older single-prompt route), and lists the loaded models. Prints
"all checks passed" at the end; any failed check raises.
"""

import hashlib
import http.server
import json
import sys
import threading

import httpx
import ollama

BASE, MODEL, GGUF = sys.argv[1], sys.argv[2], sys.argv[3]


def registry(weights: bytes):
    """Serves library/tiny:v1 over plain HTTP; returns host:port."""
    digest = "sha256:" + hashlib.sha256(weights).hexdigest()
    config = b'{"model_format":"gguf"}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model",
                    "digest": digest, "size": len(weights)}],
    }).encode()
    blobs = {digest: weights, config_digest: config}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status, body, ctype="application/octet-stream", extra=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            if self.path == "/v2/library/tiny/manifests/v1":
                return self.send(200, manifest, "application/vnd.docker.distribution.manifest.v2+json")
            prefix = "/v2/library/tiny/blobs/"
            blob = blobs.get(self.path[len(prefix):]) if self.path.startswith(prefix) else None
            if blob is None:
                return self.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "application/json")
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start, _, end = rng[6:].partition("-")
                start = int(start)
                end = int(end) if end else len(blob) - 1
                part = blob[start:end + 1]
                return self.send(206, part, extra=[("Content-Range", f"bytes {start}-{end}/{len(blob)}"),
                                                   ("Accept-Ranges", "bytes")])
            return self.send(200, blob, extra=[("Accept-Ranges", "bytes")])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}", digest


def main():
    client = ollama.Client(host=BASE)
    weights = open(GGUF, "rb").read()
    host, digest = registry(weights)
    pulled = f"{host}/library/tiny:v1"

    # version
    version = httpx.get(f"{BASE}/api/version").json()["version"]
    assert version.startswith("0.") and "llm-node" in version, version
    assert httpx.get(BASE).text == "Ollama is running"

    # pull: over https (the default) a plain-HTTP registry cannot be reached
    try:
        client.pull(pulled)
        raise AssertionError("a secure pull from a plain-HTTP registry succeeded")
    except ollama.ResponseError as e:
        assert e.status_code >= 400, e
    statuses, completed = [], 0
    for p in client.pull(pulled, insecure=True, stream=True):
        statuses.append(p.status)
        if p.digest == digest and p.completed:
            assert p.total == len(weights), p
            completed = max(completed, p.completed)
    assert statuses[0] == "pulling manifest", statuses
    assert statuses[-1] == "success", statuses
    assert completed == len(weights), (completed, len(weights))

    # list
    models = {m.model: m for m in client.list().models}
    assert pulled in models, list(models)
    tiny = models[pulled]
    assert tiny.details.family == "llama", tiny
    assert tiny.details.format == "gguf", tiny
    assert tiny.details.quantization_level == "Q4_1", tiny
    assert tiny.details.parameter_size.endswith("M"), tiny
    assert tiny.size > len(weights) and len(tiny.digest) == 64, tiny
    assert tiny.modified_at is not None, tiny

    # show (the pulled model, and the configured one, by short names)
    shown = client.show(pulled)
    assert shown.details.family == "llama", shown
    assert shown.modelinfo["general.architecture"] == "llama", shown.modelinfo
    assert shown.modelinfo["llama.context_length"] == 8192, shown.modelinfo
    assert "completion" in shown.capabilities, shown.capabilities
    assert "<|im_start|>" in shown.template, shown.template
    assert isinstance(shown.parameters, (str, type(None))), shown.parameters
    assert client.show(MODEL).details.quantization_level == "Q4_1"
    try:
        client.show("no-such-model")
        raise AssertionError("show of an unknown model succeeded")
    except ollama.ResponseError as e:
        assert e.status_code == 404, e

    # copy, then the copy is listed, shown and served; delete it again
    client.copy(pulled, "tiny-copy")
    names = [m.model for m in client.list().models]
    assert "tiny-copy:latest" in names, names
    assert client.show("tiny-copy").details.family == "llama"
    answer = client.embed(model="tiny-copy", input="hello")
    assert len(answer.embeddings) == 1
    try:
        client.copy("no-such-model", "other")
        raise AssertionError("copy of an unknown model succeeded")
    except ollama.ResponseError as e:
        assert e.status_code == 404, e

    # embed (batch) and the older embeddings route
    batch = client.embed(model=MODEL, input=["Why is the sky blue?", "Why is the grass green?"])
    assert len(batch.embeddings) == 2, batch
    size = len(batch.embeddings[0])
    assert size > 0 and all(len(v) == size for v in batch.embeddings)
    assert abs(sum(x * x for x in batch.embeddings[0]) - 1.0) < 1e-3, "unit vectors"
    assert batch.prompt_eval_count > 0 and batch.total_duration > 0, batch
    short = client.embed(model=MODEL, input="sky", dimensions=8)
    assert len(short.embeddings[0]) == 8, short
    # an input longer than the context: cut by default (truncate), refused without
    long_text = "the sky is blue because of Rayleigh scattering " * 1000
    cut = client.embed(model=MODEL, input=long_text)
    assert len(cut.embeddings[0]) == size, len(cut.embeddings[0])
    assert 0 < cut.prompt_eval_count <= 1024, cut.prompt_eval_count
    try:
        client.embed(model=MODEL, input=long_text, truncate=False)
        raise AssertionError("an input longer than the context was embedded without truncate")
    except ollama.ResponseError as e:
        assert e.status_code == 400, e
    single = client.embeddings(model=MODEL, prompt="Why is the sky blue?")
    assert len(single.embedding) == size, len(single.embedding)

    # ps: the configured model is loaded
    running = {m.model: m for m in client.ps().models}
    assert MODEL in running, list(running)
    assert running[MODEL].context_length == 1024, running[MODEL]
    assert running[MODEL].details.family == "llama", running[MODEL]
    assert running[MODEL].size > 0, running[MODEL]

    # delete
    client.delete("tiny-copy")
    names = [m.model for m in client.list().models]
    assert "tiny-copy:latest" not in names and pulled in names, names
    try:
        client.delete("tiny-copy")
        raise AssertionError("deleting a deleted model succeeded")
    except ollama.ResponseError as e:
        assert e.status_code == 404, e

    print("all checks passed")


main()
