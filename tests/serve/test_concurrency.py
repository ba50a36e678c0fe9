"""Concurrent requests: 8 clients x 50 requests, each client with its own picture, all answered
with no error and each with the answer its own picture gets alone (the model's forward passes
keep work arrays between calls, so a race would mix two pictures' answers)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CLIENTS, REQUESTS = 8, 50
LIMIT_SECONDS = 120  # a hang guard, not a timing: the 400 requests take about 2 s here


def pictures() -> list[np.ndarray]:
    """One MNIST-style picture per client, each different (a bar at its own place and angle)."""
    rng = np.random.default_rng(19)
    out = []
    for k in range(CLIENTS):
        image = rng.integers(0, 40, (28, 28)).astype(np.uint8)
        image[4 + k : 20 + k, 6 + 2 * k : 9 + 2 * k] = 255
        out.append(image)
    return out


def test_eight_clients_fifty_requests_each(toy_server, client_of):
    client = client_of(toy_server)
    images = pictures()
    bodies = [
        {"pixels": image.tolist(), "feature_maps": bool(k % 2)} for k, image in enumerate(images)
    ]
    alone = []
    for body in bodies:
        status, answer = client.post(body)
        assert status == 200
        alone.append(answer)
    assert len({json.dumps(a["probabilities"]) for a in alone}) == CLIENTS  # all different

    def one_client(k: int) -> list[str]:
        faults = []
        for i in range(REQUESTS):
            status, answer = client.post(bodies[k])
            if status != 200:
                faults.append(f"client {k}, request {i}: status {status}: {answer}")
            elif answer != alone[k]:
                faults.append(f"client {k}, request {i}: another answer than alone")
        return faults

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(one_client, k) for k in range(CLIENTS)]
        faults = [f for future in futures for f in future.result(timeout=LIMIT_SECONDS)]
    assert not faults, "\n".join(faults[:10])
