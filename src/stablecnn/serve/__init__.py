"""``stablecnn serve``: a page to draw a digit on (a piece of clothing for a Fashion-MNIST model),
and the JSON API behind it.

The page (``static/``: HTML, CSS and JavaScript shipped in the package, nothing loaded from
elsewhere, so it works offline) sends what is drawn to ``POST /api/predict`` as it changes and
shows the answer: a bar per class, the 28 x 28 input the model saw after the MNIST framing
(:mod:`stablecnn.data.framing`), the first convolution's feature maps, and the model card from
``GET /api/model``.

- :mod:`~stablecnn.serve.predictor`: :class:`Predictor`, the model loaded once from a checkpoint,
  its card, and thread-safe predictions.
- :mod:`~stablecnn.serve.inputs`: what the API accepts (a data URL, pixels, a picture's bytes) and
  the status of each fault.
- :mod:`~stablecnn.serve.server`: the standard library's ``ThreadingHTTPServer``, the routes,
  the limits and the static files.

Example:
    >>> from stablecnn.serve import Predictor, make_server  # doctest: +SKIP
    >>> server = make_server(Predictor.load("runs/mnist"), port=8000)  # doctest: +SKIP
    >>> server.serve_forever()  # doctest: +SKIP
"""

from stablecnn.serve.inputs import RequestError, read_request
from stablecnn.serve.predictor import Predictor
from stablecnn.serve.server import (
    MAX_BODY_BYTES,
    ModelServer,
    exposure_warning,
    is_local,
    make_server,
    static_files,
)

__all__ = [
    "MAX_BODY_BYTES",
    "ModelServer",
    "Predictor",
    "RequestError",
    "exposure_warning",
    "is_local",
    "make_server",
    "read_request",
    "static_files",
]
