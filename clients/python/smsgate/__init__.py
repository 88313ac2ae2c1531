"""smsgate client package: generated ``smsgate.v1`` stubs for the smsgate gRPC API.

Import the messages and stubs from ``smsgate.v1``::

    from smsgate.v1 import sms_service_pb2, sms_service_pb2_grpc
"""

__version__ = "0.1.0"
