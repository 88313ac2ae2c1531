"""WatchStatus responses built once per event and resume token, shared by the
streams that send the same one."""

from __future__ import annotations

from smsgate.v1 import sms_service_pb2 as pb

from smsgate_server.api.convert import event_to_proto
from smsgate_server.domain.events import StatusEvent

__all__ = ["EventResponses"]


class EventResponses:
    """Live subscribers of an app that watch alike send each event with the
    same token (services.watch.WatchHub.token): one response serves them all,
    instead of a conversion per subscriber. Responses are never changed after
    they are built, so the streams may share them. Bounded: past ``limit`` it
    forgets them all and starts again."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._built: dict[tuple[int, str, str], pb.WatchStatusResponse] = {}

    def get(self, event: StatusEvent, token: str) -> pb.WatchStatusResponse:
        # Stream ids are unique per shard; the token says which app.
        key = (event.shard, event.stream_id, token)
        response = self._built.get(key)
        if response is None:
            if len(self._built) >= self.limit:
                self._built.clear()
            response = pb.WatchStatusResponse(event=event_to_proto(event, token))
            self._built[key] = response
        return response
