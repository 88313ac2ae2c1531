"""smsgate server: the gRPC service behind the ``smsgate.v1`` API.

Layers (a module's folder says what it may import):

- ``domain/``    pure logic, no I/O (phone numbers, encoding, status machine, errors)
- ``store/``     the only code that knows Redis keys and scripts
- ``providers/`` one adapter per SMS vendor, plus the simulator
- ``dispatch/``  moves accepted messages to providers and records what happened
- ``api/``       gRPC servicers and interceptors: protobuf <-> domain, nothing else
"""

__version__ = "0.1.0"
