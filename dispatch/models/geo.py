"""Districts with their centroids (the fallback position of an address without coordinates) and the cache of
geocoder answers."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dispatch.models.base import Base, UTCDateTime


class District(Base):
    __tablename__ = "districts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)
    city: Mapped[str] = mapped_column(sa.String(50))
    lat: Mapped[float]
    lng: Mapped[float]


class GeocodeCacheEntry(Base):
    """One geocoder answer per normalised query, a miss (no lat/lng) included: the geocoder is asked once."""

    __tablename__ = "geocode_cache"

    query: Mapped[str] = mapped_column(sa.String(600), primary_key=True)
    lat: Mapped[float | None]
    lng: Mapped[float | None]
    display_name: Mapped[str | None] = mapped_column(sa.String(500))
    provider: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
