"""Add a header to every request and tag every response.

    interceptkit --script docs/examples/modify_header.py
"""


def request(flow):
    flow.request.headers["X-Debug"] = "1"


def response(flow):
    flow.response.headers["X-Intercepted-By"] = "interceptkit"
