"""Answer one endpoint with canned JSON; everything else reaches its server.

    interceptkit --script docs/examples/mock_endpoint.py
"""


def setup(proxy):
    proxy.mock("GET", "*/api/users/*", json={"id": 1, "name": "Ada"})
