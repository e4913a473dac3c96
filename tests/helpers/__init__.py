"""What the tests share: paths, fake models, servers (in process and as processes), certificates,
bounded waits and gRPC stubs. No tests live here, and no test module imports another test module:
what two test modules need goes here (fixtures go in a conftest.py).
"""
