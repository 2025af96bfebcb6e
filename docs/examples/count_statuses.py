"""A handler class in ``addons``: count responses by status, print a summary line.

    interceptkit --script docs/examples/count_statuses.py
"""

from collections import Counter


class StatusCounter:
    def __init__(self):
        self.seen = Counter()

    def on_response_received(self, flow):
        self.seen[flow.response.status] += 1
        flow.response.headers["X-Status-Count"] = str(self.seen[flow.response.status])


addons = [StatusCounter()]
