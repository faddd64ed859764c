"""Districts with their centroids (the fallback position of an address without coordinates)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dispatch.models.base import Base


class District(Base):
    __tablename__ = "districts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)
    city: Mapped[str] = mapped_column(sa.String(50))
    lat: Mapped[float]
    lng: Mapped[float]
