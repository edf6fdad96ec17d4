"""Embeddings from an OpenAI-compatible `/embeddings` endpoint, for the diversity of texts.

One small synchronous client: a run's quality is measured once it has ended, over a
sample of a few hundred texts, so there is no concurrency to manage. Errors are
`ProviderError`s with a reason in words.
"""

from .base import ProviderError

BATCH = 64  # texts in one request
MAX_CHARS = 8000  # of one text (an embedding model's input is bounded)


def embed(base_url, api_key, model, texts, timeout=30.0):
    """One vector (a list of floats) per text, in order."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = f"{base_url.rstrip('/')}/embeddings"
    out = []
    import httpx  # on first use, as for the providers (see runner/providers/http.py)

    with httpx.Client(timeout=timeout) as client:
        for at in range(0, len(texts), BATCH):
            part = [t[:MAX_CHARS] for t in texts[at : at + BATCH]]
            try:
                response = client.post(url, json={"model": model, "input": part}, headers=headers)
            except httpx.HTTPError as exc:
                raise ProviderError(f"the embeddings endpoint did not answer: {exc}") from None
            if response.status_code != 200:
                raise ProviderError(
                    f"the embeddings endpoint answered {response.status_code}: "
                    f"{response.text[:200]}"
                )
            out += _vectors(response, len(part))
    return out


def _vectors(response, n):
    try:
        rows = response.json()["data"]
        rows = sorted(rows, key=lambda r: r.get("index", 0))
        vectors = [[float(x) for x in r["embedding"]] for r in rows]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ProviderError("the embeddings endpoint's reply has no vectors in `data`") from None
    if len(vectors) != n or len({len(v) for v in vectors}) > 1:
        raise ProviderError(f"the embeddings endpoint sent {len(vectors)} vectors for {n} texts")
    return vectors
