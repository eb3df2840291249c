"""The benchmark harness behind ``salespulse bench``: every path measured side by side in one run.

``workload`` makes the deterministic event mix; ``ceiling``, ``quix_peer`` and the pipeline are
measured on the embedded broker, ``offline`` without one; ``runner`` puts the numbers side by side.
The measured consumers run as child processes so that each one's peak RSS is its own.
"""
