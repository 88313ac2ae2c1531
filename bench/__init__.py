"""smsgate benchmarks: every RPC measured against a bare ``grpc.aio`` echo
service in the same run, with separate server and client processes.

Run ``python -m bench`` (or ``make bench`` / ``make bench-quick``).
"""
