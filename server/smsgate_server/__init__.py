"""smsgate server: the gRPC service behind the ``smsgate.v1`` API.

Layers, top to bottom; a module imports only from layers below its own, and
``lint-imports`` checks it (contracts in pyproject.toml):

- ``api/``       gRPC servicers and the request guard: protobuf <-> domain, nothing else
- ``services/``  use cases (sending, verification, watching): validate, call the stores
- ``dispatch/``  moves accepted messages to providers and records what happened
- ``store/``     the only code that talks to Redis: key layout, Lua scripts, stores
- ``providers/`` one adapter per SMS vendor, plus the simulator
- ``domain/``    pure logic, no I/O (phone numbers, encoding, codes, statuses, errors)

Beside them: ``config`` (settings), ``runtime`` (assembles and stops one process),
``processes`` (several processes on one port), ``cli``, ``http`` (side port),
``logs`` and ``metrics``.
"""

__version__ = "0.1.0"
