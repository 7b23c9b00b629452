"""The bundled route guide: gRPC's streaming example, with a sync and an async handler.

`route_guide_rpc.py` next to this file is `rpcpoll gen idl/route_guide.proto` output, kept in
sync by a test. The features are made up: one every 10^6 units (0.1 degree) on a grid, named
after their coordinates, so that any rectangle has a predictable set of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator

from rpcpoll.service import CallContext

from .route_guide_rpc import (
    Feature,
    Point,
    Rectangle,
    RouteGuideAsyncHandler,
    RouteGuideHandler,
    RouteNote,
    RouteSummary,
)

__all__ = ["AsyncRouteGuide", "RouteGuide", "feature_at", "features_in"]

GRID = 1_000_000  # features sit where both coordinates are multiples of this


def feature_at(point: Point) -> Feature:
    """The feature at `point`: named on the grid, nameless elsewhere."""
    if point.latitude % GRID == 0 and point.longitude % GRID == 0:
        return Feature(name=f"feature {point.latitude} {point.longitude}", location=point)
    return Feature(location=point)


def features_in(rectangle: Rectangle) -> Iterator[Feature]:
    """The named features inside `rectangle` (corners included), row by row."""
    lo = rectangle.lo or Point()
    hi = rectangle.hi or Point()
    south, north = sorted((lo.latitude, hi.latitude))
    west, east = sorted((lo.longitude, hi.longitude))
    for latitude in range(-(-south // GRID) * GRID, north + 1, GRID):
        for longitude in range(-(-west // GRID) * GRID, east + 1, GRID):
            yield feature_at(Point(latitude=latitude, longitude=longitude))


def distance(a: Point, b: Point) -> int:
    """Metres between two points (haversine, as gRPC's example computes it)."""
    radius = 6_371_000
    lat1, lat2 = math.radians(a.latitude / 1e7), math.radians(b.latitude / 1e7)
    dlat = lat2 - lat1
    dlon = math.radians((b.longitude - a.longitude) / 1e7)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return int(2 * radius * math.atan2(math.sqrt(h), math.sqrt(1 - h)))


class _Summary:
    """A route's summary, built one point at a time."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.points = 0
        self.features = 0
        self.metres = 0
        self.previous: Point | None = None

    def add(self, point: Point) -> None:
        self.points += 1
        if feature_at(point).name:
            self.features += 1
        if self.previous is not None:
            self.metres += distance(self.previous, point)
        self.previous = point

    def result(self) -> RouteSummary:
        return RouteSummary(
            point_count=self.points,
            feature_count=self.features,
            distance=self.metres,
            elapsed_time=int(time.monotonic() - self.started),
        )


def _key(note: RouteNote) -> tuple[int, int]:
    location = note.location or Point()
    return location.latitude, location.longitude


class RouteGuide(RouteGuideHandler):
    """The route guide with sync methods (each stream runs on a worker thread)."""

    def get_feature(self, request: Point, context: CallContext) -> Feature:
        return feature_at(request)

    def list_features(self, request: Rectangle, context: CallContext) -> Iterator[Feature]:
        yield from features_in(request)

    def record_route(self, requests: Iterator[Point], context: CallContext) -> RouteSummary:
        summary = _Summary()
        for point in requests:
            summary.add(point)
        return summary.result()

    def route_chat(
        self, requests: Iterator[RouteNote], context: CallContext
    ) -> Iterator[RouteNote]:
        notes: dict[tuple[int, int], list[RouteNote]] = {}
        for note in requests:
            earlier = notes.setdefault(_key(note), [])
            yield from earlier
            earlier.append(note)


class AsyncRouteGuide(RouteGuideAsyncHandler):
    """The route guide with async methods (every stream a task on the server's loop)."""

    async def get_feature(self, request: Point, context: CallContext) -> Feature:
        return feature_at(request)

    async def list_features(
        self, request: Rectangle, context: CallContext
    ) -> AsyncIterator[Feature]:
        for feature in features_in(request):
            yield feature

    async def record_route(
        self, requests: AsyncIterator[Point], context: CallContext
    ) -> RouteSummary:
        summary = _Summary()
        async for point in requests:
            summary.add(point)
        return summary.result()

    async def route_chat(
        self, requests: AsyncIterator[RouteNote], context: CallContext
    ) -> AsyncIterator[RouteNote]:
        notes: dict[tuple[int, int], list[RouteNote]] = {}
        async for note in requests:
            earlier = notes.setdefault(_key(note), [])
            for old in earlier:
                yield old
            earlier.append(note)
