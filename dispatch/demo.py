"""Kunming demo data for ``flask seed-demo``: teams, engineers, logins, an intake key and a month of orders.

Everything goes through the real services and the workflow, so the demo looks like a month of real use:
engineers via :func:`~dispatch.services.engineers.create_engineer`, logins via
:func:`~dispatch.services.auth.create_user`, orders via the hotline intake
(:func:`~dispatch.services.intake.intake_order`) and every later status change via
:func:`dispatch.workflow.apply` at its historical time, so each order's event log is a consistent chain.

The data is deterministic (a seeded :class:`random.Random`); times are relative to the app clock's "now".
Loading is idempotent: engineers, users and the key are created only when missing, and the orders only
when no demo order (external id ``KMDEMO-...``) exists yet, so a second run adds nothing. (A load that was
interrupted while taking in orders is not completed by a rerun: start again from an empty database.)

Demo logins (console and PDA) and the hotline key are in :data:`DEMO_USERS` and :data:`DEMO_API_KEY`.
"""

from __future__ import annotations

import math
import random
import time as timer
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.clock import FakeClock, utcnow
from dispatch.extensions import db
from dispatch.models import ApiKey, Attachment, District, Engineer, Order, Team, User
from dispatch.phones import InvalidPhone, normalise_cn_mobile
from dispatch.services.auth import KEY_PREFIX, create_api_key, create_user
from dispatch.services.engineers import create_engineer
from dispatch.services.intake import intake_order
from dispatch.services.orders import workflow_rules
from dispatch.timeutil import business_tz
from dispatch.vocabulary import ORDER_TYPES, STATUSES

SEED = 20261125
DEMO_ORDER_PREFIX = "KMDEMO-"

# Logins: (username, role, password, engineer code). Documented in the README.
DEMO_USERS: tuple[tuple[str, str, str, str | None], ...] = (
    ("admin", "admin", "admin123", None),
    ("dispatcher", "dispatcher", "dispatch123", None),
    ("acceptance", "acceptance", "accept123", None),
    ("manager", "manager", "manager123", None),
    ("engineer", "engineer", "engineer123", "E001"),
)
DEMO_KEY_NAME = "demo-hotline"
DEMO_KEY_PREFIX = "demo"  # fixed (normally random) so that the whole key is known and documented
DEMO_KEY_SECRET = "kunming-10000-hotline"  # noqa: S105 - a published demo credential, not a secret
DEMO_API_KEY = f"{KEY_PREFIX}{DEMO_KEY_PREFIX}_{DEMO_KEY_SECRET}"

DISTRICTS = ("五华区", "盘龙区", "官渡区", "西山区", "呈贡区")
DISTRICT_WEIGHTS = (22, 22, 26, 18, 12)
DISTRICT_CODES = {"五华区": "WH", "盘龙区": "PL", "官渡区": "GD", "西山区": "XS", "呈贡区": "CG"}

# Team: (leader, leader's mobile, districts its engineers cover, number of engineers)
TEAMS: dict[str, tuple[str, str, tuple[str, ...], int]] = {
    "五华装维一班": ("杨建华", "18908712301", ("五华区", "盘龙区", "西山区"), 16),
    "官渡装维二班": ("李志刚", "18987154402", ("官渡区", "西山区", "盘龙区"), 14),
    "呈贡综合班": ("普永春", "15368713503", ("呈贡区", "官渡区"), 10),
}

# Final status of the demo orders → how many (300 in all; completed the majority).
STATUS_COUNTS: dict[str, int] = {
    "completed": 176,
    "cancelled": 14,
    "returned": 10,
    "suspended": 12,
    "new": 20,
    "dispatched": 14,
    "taken": 12,
    "appointed": 16,
    "on_site": 8,
    "pending_acceptance": 8,
    "in_progress": 10,
}
OPEN_FINALS = frozenset(
    {"new", "dispatched", "taken", "appointed", "on_site", "pending_acceptance", "in_progress"}
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Street names per district, residential compounds, shop fronts, names.
STREETS: dict[str, tuple[str, ...]] = {
    "五华区": _words(
        "人民中路 东风西路 青年路 学府路 一二一大街 西昌路 龙翔街 篆塘路 红云路 华山西路 莲华街"
    ),
    "盘龙区": _words("北京路 白塔路 穿金路 金星路 东风东路 联盟路 龙泉路 白龙路 北辰大道 小康大道 新迎路"),
    "官渡区": _words(
        "春城路 关兴路 金源大道 环城南路 民航路 关上中路 彩云北路 官南大道 广福路 前兴路 云秀路"
    ),
    "西山区": _words(
        "滇池路 西园路 前卫西路 日新中路 兴苑路 海埂路 福海路 马街北路 昌源中路 西坝路 人民西路"
    ),
    "呈贡区": _words("春融西路 春融东路 洛龙路 雨花路 斗南路 彩云南路 聚贤街 锦绣大街 景明南路 吴家营路"),
}
COMPOUNDS = _words(
    "锦苑小区 阳光花园 滇池明珠 金星小区 和谐家园 春城丽景 翠苑 银海森林 俊发名城 中铁云时代 万科城 "
    "恒大城 云大职工宿舍 昆钢家属区 书香门第 金色年华 世纪半岛 南亚风情园 云纺小区 龙湖春江郦城"
)
SHOPS = _words("一楼商铺 过街楼茶室 便利店 米线馆 药房 花店 写字楼12层")
SURNAMES = tuple("张王李赵刘陈杨黄周吴徐孙马朱胡郭何高林罗段普字尹施董余沈钱苏杜陶龙和")
GIVEN_NAMES = _words(
    "建华 志强 海涛 永明 国庆 丽萍 晓东 云峰 春雷 文斌 俊杰 明辉 红梅 金龙 绍勇 家豪 天宇 秀英 桂芳 "
    "玉兰 国荣 德明 正华 子涵 雨萱 浩然 建国 树林 凤仙 学文 宏伟 卫东 丽华 江 勇 静 磊 敏"
)
CUSTOMER_PREFIXES = _words("133 153 180 181 189 177 199 138 139 158 187 151")

PRODUCTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "broadband_install": (
        ("broadband_300m",),
        ("broadband_500m",),
        ("broadband_1000m",),
        ("broadband_1000m", "iptv"),
    ),
    "iptv_install": (("iptv_plus",), ("iptv_plus", "set_top_box_4k")),
    "move": (("broadband_move",),),
    "opportunity": (("fttr",), ("smart_camera",), ("enterprise_broadband",)),
    "repair": ((),),
}
NOTES: dict[str, tuple[str, ...]] = {
    "broadband_install": (
        "新装300M宽带，客户要求上午上门",
        "新装千兆宽带，需要布线到书房",
        "客户新房装修完毕，首次开通宽带",
        "",
    ),
    "iptv_install": ("加装IPTV机顶盒，客厅电视", "老人在家，请提前电话联系", ""),
    "move": ("搬家移机，原地址在同区，旧光猫需回收", "移机到新小区，客户白天上班，请预约晚间", ""),
    "opportunity": ("客户咨询FTTR全屋光纤组网", "临街商铺咨询企业宽带加监控", "客户想了解智能家居套餐"),
    "repair": (
        "宽带无法上网，光猫LOS灯红灯闪烁",
        "网速慢，晚上经常掉线",
        "IPTV画面卡顿、马赛克",
        "WiFi信号弱，卧室无信号",
        "光猫无法开机",
        "电话报障：整个单元都上不了网",
    ),
}
REPAIR_CAUSES = (
    "ont_fault",
    "drop_fiber_broken",
    "connector_dirty",
    "splitter_port_fault",
    "indoor_cable",
    "router_config",
    "customer_device",
)
RETURN_NOTES = {
    "no_resource": "分纤箱端口已满，无可用资源",
    "wrong_address": "地址不详，多次联系客户无法确认",
    "customer_refused": "客户表示不再需要安装",
    "duplicate": "与客户另一张工单重复",
    "other": "非本人负责片区，退回调度重新派单",
}
SUSPEND_NOTES = {
    "customer_unavailable": "客户出差，下周回昆明",
    "customer_postponed": "客户要求装修完成后再安装",
    "no_resource": "等待分纤箱扩容",
    "third_party": "等待物业开通弱电井",
    "force_majeure": "暴雨，户外施工暂停",
}
CANCEL_REASONS = ("客户来电取消", "客户已办理其他运营商业务", "重复受理，撤销本单")


@dataclass(frozen=True)
class _Eng:
    """What the planner needs of an engineer."""

    id: int
    code: str
    name: str
    districts: frozenset[str]
    skills: frozenset[str]
    user_id: int | None


@dataclass
class _Step:
    """One planned event of an order's life (``by``: intake, dispatcher, auto, acceptance or engineer)."""

    action: str
    at: datetime
    by: str
    engineer: _Eng | None = None
    params: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] | None = None
    attachments: list[tuple[str, str, int]] = field(default_factory=list)  # kind, sha256, size
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Plan:
    """An order to take in through intake and the steps that bring it to its final status."""

    final: str
    data: dict[str, Any]
    steps: list[_Step]
    order: Order | None = None
    kinds: set[str] = field(default_factory=set)


@dataclass
class _Household:
    name: str
    phone: str
    district: str
    text: str
    lat: float
    lng: float


@dataclass
class _Created:
    teams: int = 0
    engineers: int = 0
    users: int = 0
    keys: int = 0
    orders: int = 0
    by_status: Counter[str] = field(default_factory=Counter)

    @property
    def anything(self) -> bool:
        return bool(self.teams or self.engineers or self.users or self.keys or self.orders)


def seed_demo() -> str:
    """Load the Kunming demo data into the current app's database and return a one-line summary.

    Idempotent: what already exists is left alone; a second run creates nothing and says so.
    """
    started = timer.perf_counter()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    now = utcnow().replace(microsecond=0)
    rng = random.Random(SEED)
    created = _Created()
    original_clock = app.extensions.get("clock")
    fake = FakeClock(now - timedelta(days=31))
    app.extensions["clock"] = fake
    try:
        with _bulk_loading(db.session()):
            centroids = _centroids()
            engineers = _ensure_engineers(rng, centroids, created)
            users = _ensure_users(engineers, created)
            key = _ensure_api_key(created)
            if not _demo_orders_exist():
                _load_orders(rng, now, fake, centroids, engineers, users, key, created)
    finally:
        if original_clock is None:
            app.extensions.pop("clock", None)
        else:
            app.extensions["clock"] = original_clock
    seconds = timer.perf_counter() - started
    return _summary(created, seconds)


@contextmanager
def _bulk_loading(session: Session) -> Iterator[None]:
    """Make the many small commits of the services cheap while the demo loads.

    Loaded objects are kept across commits (nothing else writes these rows meanwhile), and on PostgreSQL
    each transaction skips waiting for its WAL flush (``synchronous_commit off``: a database server crash
    can lose the last few demo transactions, never corrupt anything).
    """

    def no_flush_wait(session: Session, transaction: Any, connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    expire_on_commit, session.expire_on_commit = session.expire_on_commit, False
    event.listen(session, "after_begin", no_flush_wait)
    try:
        yield
    finally:
        event.remove(session, "after_begin", no_flush_wait)
        session.expire_on_commit = expire_on_commit
        session.expire_all()


def _summary(created: _Created, seconds: float) -> str:
    totals = {
        "teams": db.session.scalar(sa.select(sa.func.count()).select_from(Team)) or 0,
        "engineers": db.session.scalar(sa.select(sa.func.count()).select_from(Engineer)) or 0,
        "orders": db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Order)
            .where(Order.external_id.startswith(DEMO_ORDER_PREFIX))
        )
        or 0,
    }
    if not created.anything:
        return (
            f"demo data already loaded, nothing added ({totals['teams']} teams, "
            f"{totals['engineers']} engineers, {totals['orders']} demo orders)"
        )
    statuses = ", ".join(f"{s} {created.by_status[s]}" for s in STATUSES if created.by_status[s])
    logins = ", ".join(f"{u}/{p}" for u, _, p, _ in DEMO_USERS)
    return (
        f"demo data loaded in {seconds:.1f} s: {created.teams} teams, {created.engineers} engineers, "
        f"{created.users} users, {created.keys} API key, {created.orders} orders ({statuses}); "
        f"logins {logins}; intake key {DEMO_API_KEY}"
    )


# --- reference data: engineers, users, the key ----------------------------------------------------------


def _centroids() -> dict[str, tuple[float, float]]:
    rows = db.session.scalars(sa.select(District).where(District.name.in_(DISTRICTS))).all()
    found = {d.name: (d.lat, d.lng) for d in rows}
    missing = [name for name in DISTRICTS if name not in found]
    if missing:
        raise RuntimeError(f"districts missing (run the migrations first): {', '.join(missing)}")
    return found


def _mobile(rng: random.Random, prefixes: tuple[str, ...], taken: set[str]) -> str:
    """A valid, unused Chinese mobile number in E.164."""
    while True:
        raw = rng.choice(prefixes) + f"{rng.randrange(10**8):08d}"
        try:
            number = normalise_cn_mobile(raw)
        except InvalidPhone:  # pragma: no cover - every prefix used is a mobile range
            continue
        if number not in taken:
            taken.add(number)
            return number


def _person(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = rng.choice(SURNAMES) + rng.choice(GIVEN_NAMES)
        if name not in taken:
            taken.add(name)
            return name


def _engineer_specs(rng: random.Random, centroids: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    names: set[str] = {leader for leader, _, _, _ in TEAMS.values()}
    phones: set[str] = set()
    specs: list[dict[str, Any]] = []
    for team, (_, _, districts, size) in TEAMS.items():
        for i in range(size):
            n = len(specs) + 1
            home = districts[i % len(districts)] if i % 3 else districts[0]
            covered = [home]
            others = [d for d in districts if d != home]
            if rng.random() < 0.45:
                covered.append(rng.choice(others))
            skills = {"broadband_install", "repair"}
            for skill, share in (("iptv_install", 0.75), ("move", 0.5), ("opportunity", 0.35)):
                if rng.random() < share or n == 1 or i % 5 == 0:
                    skills.add(skill)
            lat, lng = centroids[home]
            specs.append(
                {
                    "code": f"E{n:03d}",
                    "name": _person(rng, names),
                    "phone": _mobile(rng, ("189", "153", "181", "133"), phones),
                    "team": team,
                    "skills": sorted(skills),
                    "districts": covered,
                    "home": {
                        "lat": round(lat + rng.gauss(0, 0.012), 6),
                        "lng": round(lng + rng.gauss(0, 0.012), 6),
                    },
                    "daily_capacity": rng.randint(4, 8),
                    "shifts": None,
                }
            )
    return specs


def _ensure_engineers(
    rng: random.Random, centroids: dict[str, tuple[float, float]], created: _Created
) -> list[_Eng]:
    system = Actor.system(name="seed-demo", source="cli")
    existing_teams = set(db.session.scalars(sa.select(Team.name).where(Team.name.in_(TEAMS))))
    for spec in _engineer_specs(rng, centroids):
        if db.session.scalar(sa.select(Engineer.id).where(Engineer.code == spec["code"])) is None:
            create_engineer(spec, actor=system)
            created.engineers += 1
    for team in db.session.scalars(sa.select(Team).where(Team.name.in_(TEAMS))):
        leader, phone, _, _ = TEAMS[team.name]
        if team.leader_name is None:
            team.leader_name, team.leader_phone = leader, normalise_cn_mobile(phone)
        if team.name not in existing_teams:
            created.teams += 1
    db.session.commit()
    codes = [f"E{n:03d}" for n in range(1, sum(size for *_, size in TEAMS.values()) + 1)]
    rows = db.session.scalars(
        sa.select(Engineer).where(Engineer.code.in_(codes)).order_by(Engineer.code)
    ).all()
    linked: dict[int, int] = {
        engineer_id: user_id
        for engineer_id, user_id in db.session.execute(
            sa.select(User.engineer_id, User.id).where(User.engineer_id.is_not(None))
        )
        if engineer_id is not None
    }
    return [
        _Eng(
            id=e.id,
            code=e.code,
            name=e.name,
            districts=frozenset(d.name for d in e.districts),
            skills=frozenset(e.skills),
            user_id=linked.get(e.id),
        )
        for e in rows
        if e.active
    ]


def _ensure_users(engineers: list[_Eng], created: _Created) -> dict[str, Actor]:
    """The demo logins, created when missing; returns an actor per role for the order history."""
    system = Actor.system(name="seed-demo", source="cli")
    by_code = {e.code: e for e in engineers}
    actors: dict[str, Actor] = {}
    for username, role, password, code in DEMO_USERS:
        user = db.session.scalar(sa.select(User).where(User.username == username))
        if user is None:
            engineer = by_code.get(code) if code else None
            if code and engineer is None:
                continue
            if engineer is not None and engineer.user_id is not None:
                continue  # that engineer already has a login
            user = create_user(username, role=role, password=password, engineer_code=code, actor=system)
            created.users += 1
            if engineer is not None:
                by_code[engineer.code] = replace(engineer, user_id=user.id)
        actors[role] = Actor(kind="user", id=user.id, name=user.username, role=role, source="api")
    engineers[:] = [by_code[e.code] for e in engineers]
    return actors


def _ensure_api_key(created: _Created) -> ApiKey:
    key = db.session.scalar(sa.select(ApiKey).where(ApiKey.prefix == DEMO_KEY_PREFIX))
    if key is None:
        _, key = create_api_key(
            DEMO_KEY_NAME,
            ["intake"],
            actor=Actor.system(name="seed-demo", source="cli"),
            raw_secret=DEMO_KEY_SECRET,
        )
        # Only the secret is hashed; replacing the random prefix by a fixed one makes the whole key known.
        key.prefix = DEMO_KEY_PREFIX
        db.session.commit()
        created.keys += 1
    return key


def _demo_orders_exist() -> bool:
    query = sa.select(Order.id).where(Order.external_id.startswith(DEMO_ORDER_PREFIX)).limit(1)
    return db.session.scalar(query) is not None


# --- orders ----------------------------------------------------------------------------------------------


def _load_orders(
    rng: random.Random,
    now: datetime,
    clock: FakeClock,
    centroids: dict[str, tuple[float, float]],
    engineers: list[_Eng],
    users: dict[str, Actor],
    key: ApiKey,
    created: _Created,
) -> None:
    planner = _Planner(rng, now, centroids, engineers)
    finals = [status for status, count in STATUS_COUNTS.items() for _ in range(count)]
    rng.shuffle(finals)
    plans = [planner.plan(final, index) for index, final in enumerate(finals, start=1)]

    actors = {
        "intake": Actor(
            kind="api_key", id=key.id, name=key.name, scopes=frozenset(key.scopes), source="intake"
        ),
        "dispatcher": users.get("dispatcher")
        or Actor(kind="user", id=None, name="dispatcher", role="dispatcher", source="api"),
        "acceptance": users.get("acceptance")
        or Actor(kind="user", id=None, name="acceptance", role="acceptance", source="api"),
        "auto": Actor.system(name="auto-dispatch", source="scheduler"),
    }
    rules = workflow_rules()
    # Intake first, in time order (one commit per order, as the service does it), then every later step in
    # time order in one transaction: without a flush per step the inserts go out in batches.
    for at, p in sorted((plan.steps[0].at, p) for p, plan in enumerate(plans)):
        clock.set(at)
        order, _ = intake_order(plans[p].data, actor=actors["intake"])
        plans[p].order = db.session.merge(order, load=False)  # its later steps change it
    later = sorted((step.at, p, s) for p, plan in enumerate(plans) for s, step in enumerate(plan.steps) if s)
    with db.session.no_autoflush:
        for _, p, s in later:
            _perform(plans[p], plans[p].steps[s], actors, rules)
    wrong = [
        plan.data["external_id"] for plan in plans if plan.order is None or plan.order.status != plan.final
    ]
    if wrong:  # the workflow changed under the planner: keep the history out rather than half right
        db.session.rollback()
        raise RuntimeError(f"demo orders did not reach their planned status: {', '.join(wrong[:5])}")
    db.session.commit()
    created.by_status.update(plan.final for plan in plans)
    created.orders = len(plans)


def _engineer_actor(engineer: _Eng) -> Actor:
    return Actor(
        kind="user",
        id=engineer.user_id,
        name=engineer.name,
        role="engineer",
        engineer_id=engineer.id,
        source="mobile",
        device_id=f"PDA-{engineer.code}",
    )


def _perform(plan: _Plan, step: _Step, actors: dict[str, Actor], rules: workflow.Rules) -> None:
    order = plan.order
    assert order is not None
    if step.engineer is not None:
        actor = _engineer_actor(step.engineer)
        device_time: datetime | None = step.at - timedelta(seconds=(order.id * 7 + len(plan.kinds)) % 40)
    else:
        actor, device_time = actors[step.by], None
    for kind, sha, size in step.attachments:
        db.session.add(
            Attachment(
                order_id=order.id,
                kind=kind,
                sha256=sha,
                content_type="image/png" if kind == "signature" else "image/jpeg",
                size_bytes=size,
                storage_path=f"demo/{sha}.{'png' if kind == 'signature' else 'jpg'}",
                uploaded_by=step.engineer.user_id if step.engineer else None,
                created_at=step.at - timedelta(minutes=2),
            )
        )
        plan.kinds.add(kind)
    for name, value in step.fields.items():
        setattr(order, name, value)
    workflow.apply(
        order,
        step.action,
        actor,
        now=step.at,
        params=step.params,
        device_time=device_time,
        attachment_kinds=frozenset(plan.kinds),
        rules=rules,
        event_payload=step.payload,
    )


def _shifted(value: Any, delta: timedelta) -> Any:
    if isinstance(value, datetime):
        return value + delta
    if isinstance(value, dict):
        return {k: _shifted(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_shifted(v, delta) for v in value]
    return value


def _distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


class _Planner:
    """Plans one order's life: intake data, then each step at a plausible Kunming time."""

    def __init__(
        self,
        rng: random.Random,
        now: datetime,
        centroids: dict[str, tuple[float, float]],
        engineers: list[_Eng],
    ) -> None:
        self.rng = rng
        self.now = now
        self.tz = business_tz()
        self.centroids = centroids
        self.engineers = engineers
        self.e001 = next((e for e in engineers if e.code == "E001"), None)
        self.households: list[_Household] = []
        self.phones: set[str] = set()
        self.names: set[str] = set()
        # per-order state
        self.t = now
        self.steps: list[_Step] = []
        self.engineer: _Eng | None = None
        self.window: tuple[datetime, datetime] | None = None
        self.requested: tuple[datetime, datetime] | None = None
        self.order_type = ""
        self.pay_mode = ""
        self.final = ""
        self.household: _Household | None = None

    # -- the order ------------------------------------------------------------------------------------

    def plan(self, final: str, index: int) -> _Plan:
        rng = self.rng
        self.final, self.steps, self.engineer, self.window = final, [], None, None
        household = self._household(final)
        self.household = household
        order_type = self.order_type
        days_ago = rng.randint(0, 1) if final in OPEN_FINALS else rng.randint(0, 4)
        if final in ("completed", "cancelled"):
            days_ago = rng.randint(0, 27)
        day = (self.now.astimezone(self.tz) - timedelta(days=days_ago)).date()
        minute = rng.randint(8 * 60, 20 * 60 + 30)
        self.t = datetime.combine(day, clock_time(minute // 60, minute % 60), tzinfo=self.tz).astimezone(UTC)
        self.requested = (
            self._requested_window(day) if order_type != "repair" and rng.random() < 0.8 else None
        )
        priority = "normal"
        if order_type == "repair":
            priority = rng.choices(("normal", "high", "urgent"), (70, 25, 5))[0]
        elif order_type == "opportunity" and rng.random() < 0.3:
            priority = "low"
        data: dict[str, Any] = {
            "external_id": "",
            "order_type": order_type,
            "pay_mode": self.pay_mode,
            "priority": priority,
            "customer": {"name": household.name, "phone": household.phone},
            "address": {
                "text": household.text,
                "district": household.district,
                "lat": household.lat,
                "lng": household.lng,
            },
            "requested_window": {"start": self.requested[0], "end": self.requested[1]}
            if self.requested
            else None,
            "products": list(rng.choice(PRODUCTS[order_type])),
            "notes": rng.choice(NOTES[order_type]) or None,
        }
        self._step("intake", "intake")
        self._life(final)

        # Move the whole life back by whole days (local times of day stay) until it is in the past.
        last = self.steps[-1].at
        days = max(0, math.ceil((last - self.now + timedelta(minutes=5)) / timedelta(days=1)))
        delta = -timedelta(days=days)
        for step in self.steps:
            step.at += delta
            step.params = _shifted(step.params, delta)
            if step.payload is not None:
                step.payload = _shifted(step.payload, delta)
        data = _shifted(data, delta)
        created_local = self.steps[0].at.astimezone(self.tz)
        data["external_id"] = f"{DEMO_ORDER_PREFIX}{created_local:%Y%m%d}-{index:04d}"
        final_step = self.steps[-1]
        if final == "suspended" and rng.random() < 0.6:
            resume_day = self.now.astimezone(self.tz).date() + timedelta(days=rng.randint(1, 3))
            final_step.params["until"] = datetime.combine(
                resume_day, clock_time(9), tzinfo=self.tz
            ).astimezone(UTC)
        return _Plan(final=final, data=data, steps=self.steps)

    def _household(self, final: str) -> _Household:
        rng = self.rng
        repeat = self.households and final != "pending_acceptance" and rng.random() < 0.1
        if repeat:
            self.order_type, self.pay_mode = "repair", "prepaid"
            return rng.choice(self.households)
        self.order_type = rng.choices(ORDER_TYPES, (35, 12, 13, 30, 10))[0]
        if final == "pending_acceptance" and self.order_type == "repair":
            self.order_type = "broadband_install"
        if self.order_type == "repair":
            self.pay_mode = "prepaid"
        elif final == "pending_acceptance":
            self.pay_mode = "install_then_pay"
        else:
            self.pay_mode = "install_then_pay" if rng.random() < 0.65 else "prepaid"
        district = rng.choices(DISTRICTS, DISTRICT_WEIGHTS)[0]
        street = rng.choice(STREETS[district])
        if self.order_type == "opportunity" and rng.random() < 0.5:
            place = rng.choice(SHOPS)
        else:
            place = (
                f"{rng.choice(COMPOUNDS)}{rng.randint(1, 28)}栋{rng.randint(1, 4)}单元"
                f"{rng.randint(1, 32)}{rng.randint(1, 4):02d}室"
            )
        lat, lng = self.centroids[district]
        surname = rng.choice(SURNAMES)
        name = surname + (rng.choice(("先生", "女士")) if rng.random() < 0.25 else rng.choice(GIVEN_NAMES))
        household = _Household(
            name=name,
            phone=_mobile(rng, CUSTOMER_PREFIXES, self.phones),
            district=district,
            text=f"云南省昆明市{district}{street}{rng.randint(1, 399)}号{place}",
            lat=round(lat + rng.gauss(0, 0.012), 6),
            lng=round(lng + rng.gauss(0, 0.012), 6),
        )
        self.households.append(household)
        return household

    def _requested_window(self, day: date) -> tuple[datetime, datetime]:
        start_day = day + timedelta(days=self.rng.randint(1, 2))
        hour = self.rng.choice((9, 14))
        start = datetime.combine(start_day, clock_time(hour), tzinfo=self.tz).astimezone(UTC)
        return start, start + timedelta(hours=3)

    # -- the life -------------------------------------------------------------------------------------

    def _life(self, final: str) -> None:
        rng = self.rng
        if final == "cancelled":
            self._walk(rng.choice(("intake", "intake", "assign", "appoint")))
            self._cancel()
        elif final == "returned":
            self._walk(rng.choice(("take", "appoint", "check_in")))
            self._return()
        elif final == "suspended":
            self._walk(rng.choice(("intake", "take", "appoint")))
            self._suspend()
        else:
            self._walk(final)

    def _walk(self, until: str) -> None:
        """Run the normal path up to ``until`` (a stage or the final status it leads to)."""
        itp = self.pay_mode == "install_then_pay"
        stop = {
            "new": "intake",
            "dispatched": "assign",
            "taken": "take",
            "appointed": "appoint",
            "on_site": "check_in",
            "pending_acceptance": "submit",
            "in_progress": "approve" if itp else "start_work",
            "completed": "complete",
        }.get(until, until)
        stages = ["intake", "assign", "take", "appoint", "check_in"]
        stages += ["submit", "approve"] if itp else ["start_work"]
        stages.append("complete")
        for stage in stages:
            if stage != "intake":
                getattr(self, f"_{stage}")(stop)
            if stage == stop:
                return

    def _wait(self, low: float, high: float) -> None:
        self.t += timedelta(minutes=self.rng.uniform(low, high))
        self.t = self.t.replace(microsecond=0)

    def _step(self, action: str, by: str, **kwargs: Any) -> _Step:
        engineer = self.engineer if by == "engineer" else None
        step = _Step(action=action, at=self.t, by=by, engineer=engineer, **kwargs)
        self.steps.append(step)
        return step

    def _pick(self, exclude: _Eng | None = None) -> _Eng:
        assert self.household is not None
        district, order_type = self.household.district, self.order_type
        pool = [e for e in self.engineers if e is not exclude]
        candidates = [e for e in pool if district in e.districts and order_type in e.skills]
        candidates = candidates or [e for e in pool if order_type in e.skills] or pool
        if (
            self.e001 in candidates
            and self.e001 is not exclude
            and self.final in OPEN_FINALS - {"new"}
            and self.rng.random() < 0.35
        ):
            return self.e001
        return self.rng.choice(candidates)

    def _assign(self, stop: str) -> None:
        self._wait(3, 40)
        self._dispatch("assign", "auto" if self.rng.random() < 0.15 else "dispatcher")
        if stop == "assign" and self.final == "dispatched" and self.rng.random() < 0.15:
            self._wait(20, 90)
            self._dispatch("reassign", "dispatcher")

    def _dispatch(self, action: str, by: str) -> None:
        previous = self.engineer
        engineer = self._pick(exclude=previous)
        self.engineer = engineer
        self._step(
            action,
            by,
            params={"engineer_id": engineer.id},
            payload={
                "engineer_id": engineer.id,
                "engineer_code": engineer.code,
                "previous_engineer_id": previous.id if previous else None,
                "mode": "auto" if by == "auto" else "manual",
                "warnings": [],
            },
        )

    def _take(self, stop: str) -> None:
        self._wait(2, 14)
        self._step("take", "engineer")
        if stop == "take" or self.final != "completed":
            return
        roll = self.rng.random()
        if roll < 0.05:  # sent back to the desk and dispatched to a colleague
            self._wait(10, 60)
            self._step("return", "engineer", params={"reason_code": "other", "note": RETURN_NOTES["other"]})
            self._wait(10, 50)
            self._dispatch("assign", "dispatcher")
            self._wait(2, 14)
            self._step("take", "engineer")
        elif roll < 0.11:  # the customer asked to wait
            self._wait(10, 50)
            self._step(
                "suspend",
                "engineer",
                params={
                    "reason_code": "customer_postponed",
                    "note": SUSPEND_NOTES["customer_postponed"],
                    "until": None,
                },
            )
            self._wait(5 * 60, 28 * 60)
            self._step("resume", "dispatcher", params={"note": "客户已确认可以上门"})

    def _appoint(self, stop: str) -> None:
        rng = self.rng
        if rng.random() < 0.25:
            self._wait(10, 40)
            self._step("contact_attempt", "engineer", params={"outcome": rng.choice(("no_answer", "busy"))})
        self._wait(5, 50)
        self.window = self._slot()
        self._step("appoint", "engineer", params={"outcome": "reached", "appointment": self._window_params()})
        if rng.random() < 0.07:
            self._wait(10, 60)
            start, end = self.window
            self.window = (start + timedelta(days=1), end + timedelta(days=1))
            params = {
                "reason": "customer",
                "appointment": self._window_params(),
                "note": "客户临时有事，改约次日",
            }
            self._step("reschedule", "engineer", params=params)

    def _window_params(self) -> dict[str, datetime]:
        assert self.window is not None
        return {"start": self.window[0], "end": self.window[1]}

    def _slot(self) -> tuple[datetime, datetime]:
        """The visit window: inside the requested window when there is still time, else the next free slot."""
        if self.requested and self.requested[0] > self.t + timedelta(hours=1):
            start = self.requested[0] + timedelta(hours=self.rng.choice((0, 1)))
            return start, start + timedelta(hours=2)
        lead = timedelta(hours=1 if self.order_type == "repair" else 3)
        local = (self.t + lead).astimezone(self.tz).replace(minute=0, second=0, microsecond=0) + timedelta(
            hours=1
        )
        if local.hour < 9:
            local = local.replace(hour=9)
        elif local.hour > 18:
            local = (local + timedelta(days=1)).replace(hour=self.rng.choice((9, 10, 14)))
        start = local.astimezone(UTC)
        return start, start + timedelta(hours=2)

    def _check_in(self, stop: str) -> None:
        assert self.window is not None and self.household is not None
        rng = self.rng
        early = (
            timedelta(minutes=rng.uniform(5, 45))
            if rng.random() < 0.85
            else -timedelta(minutes=rng.uniform(5, 40))
        )
        self.t = max(self.t + timedelta(minutes=10), self.window[0] - early).replace(microsecond=0)
        lat = round(self.household.lat + rng.gauss(0, 0.0008), 6)
        lng = round(self.household.lng + rng.gauss(0, 0.0008), 6)
        self._step(
            "check_in",
            "engineer",
            params={
                "lat": lat,
                "lng": lng,
                "accuracy_m": rng.randint(6, 35),
                "distance_m": round(_distance_m(lat, lng, self.household.lat, self.household.lng)),
            },
        )

    def _resources(self) -> dict[str, Any]:
        assert self.household is not None
        code = DISTRICT_CODES[self.household.district]
        return {"box_id": f"{code}-FXH-{self.rng.randint(1, 480):03d}", "port": str(self.rng.randint(1, 16))}

    def _photo(self, kind: str) -> tuple[str, str, int]:
        return kind, f"{self.rng.getrandbits(256):064x}", self.rng.randint(60_000, 900_000)

    def _submit(self, stop: str) -> None:
        self._wait(15, 40)
        self._step("submit", "engineer", attachments=[self._photo("id_card")], fields=self._resources())
        if self.rng.random() < 0.08:
            self._wait(2, 9)
            self._step("reject", "acceptance", params={"note": "身份证照片反光看不清，请重新拍摄"})
            self._wait(6, 20)
            self._step("submit", "engineer", attachments=[self._photo("id_card")])

    def _approve(self, stop: str) -> None:
        if self.rng.random() < 0.85:  # the desk's target is 10 minutes; most are well within it
            self._wait(1.5, 9)
        else:
            self._wait(10, 25)
        self._step("approve", "acceptance", params={"note": "证件与资源核验通过"})

    def _start_work(self, stop: str) -> None:
        if stop != "start_work" and self.rng.random() < 0.3:
            return
        self._wait(5, 20)
        self._step("start_work", "engineer")

    def _complete(self, stop: str) -> None:
        rng = self.rng
        self._wait(40, 150)
        attachments = [self._photo("after")]
        fields: dict[str, Any] = {}
        params: dict[str, Any] = {}
        if self.order_type in workflow.CHECKLISTS and "ont_sn" in workflow.CHECKLISTS[self.order_type]:
            attachments += [self._photo("signature"), self._photo("ont_label")]
            if rng.random() < 0.5:
                attachments.insert(0, self._photo("before"))
            fields = {
                "ont_sn": rng.choice(("ZTEG", "HWTC", "FHTT")) + f"{rng.getrandbits(32):08X}",
                "loid": f"0871{rng.randint(10**7, 10**8 - 1)}",
                "optical_power_dbm": round(rng.uniform(-24.5, -15.0), 1),
            }
            if not any(step.fields.get("box_id") for step in self.steps):
                fields.update(self._resources())
        elif self.order_type == "repair":
            attachments.insert(0, self._photo("before"))
            params = {"cause_code": rng.choice(REPAIR_CAUSES)}
        self._step("complete", "engineer", params=params, attachments=attachments, fields=fields)

    # -- the endings that leave the normal path -------------------------------------------------------

    def _cancel(self) -> None:
        self._wait(20, 6 * 60)
        by = "intake" if self.rng.random() < 0.6 else "dispatcher"
        reason = CANCEL_REASONS[0] if by == "intake" else self.rng.choice(CANCEL_REASONS[1:])
        self._step("cancel", by, params={"reason": reason})

    def _return(self) -> None:
        self._wait(10, 90)
        reason = self.rng.choice(
            ("no_resource", "no_resource", "wrong_address", "customer_refused", "duplicate")
        )
        self._step("return", "engineer", params={"reason_code": reason, "note": RETURN_NOTES[reason]})

    def _suspend(self) -> None:
        self._wait(10, 120)
        if self.engineer is None or self.steps[-1].action == "intake":
            reason = self.rng.choice(("no_resource", "third_party"))
            by = "dispatcher"
        else:
            reason = self.rng.choice(
                ("customer_unavailable", "customer_postponed", "no_resource", "force_majeure")
            )
            by = "engineer"
        self._step(
            "suspend", by, params={"reason_code": reason, "note": SUSPEND_NOTES[reason], "until": None}
        )
