"""The composition root: settings -> inventory -> connect(host) -> engine, store, fix service.

Every entry point (`mailcheck check`, `fix`, `rollback`, `audit`, `serve`) gets these
from a Wiring, and nothing else builds them, so they cannot drift apart: one
`connect(host)`, jump hosts included, serves the checks, the fixes, the dead-man
guard's fresh connection and rollbacks alike. Tests hand a Wiring their fakes
(`connect=`, `engine=`, `store=`).
"""

from __future__ import annotations

from functools import cached_property

from bot.engine import Checker, Engine
from bot.fixes.policy import GroupMembers
from bot.fixes.service import FixService
from bot.fixes.verify import engine_verifier
from bot.store import Store, open_store
from bot.transport import Connect, LocalTransport, Transport, ssh_connect
from config.inventory import Host, Inventory, load_inventory
from config.settings import Settings


class Wiring:
    def __init__(self, settings: Settings, inventory: Inventory | None = None, *,
                 connect: Connect | None = None, engine: Checker | None = None,
                 store: Store | None = None) -> None:
        """`inventory`: default, the file settings.inventory names (ConfigError if bad)."""
        self.settings = settings
        self.inventory = inventory if inventory is not None else load_inventory(settings.inventory)
        self._connect = connect or ssh_connect(settings, self.inventory)
        self._engine = engine
        self._store = store

    def connect(self, host: Host) -> Transport:
        """A transport to `host`: SSH, through its jump host when the inventory names one."""
        return self._connect(host)

    def engine(self, *, local: bool = False, outbound_targets: str | None = None) -> Checker:
        """The check engine; `local`: run the commands on this machine (`check --local`);
        `outbound_targets`: the outbound test's targets instead of the setting (`off` skips).
        The vantage points are always reached over SSH (`connect`), `local` or not."""
        if local or outbound_targets is not None:
            connect = (lambda h: LocalTransport(h.name, max_output=self.settings.max_output,
                                                max_host_output=self.settings.max_host_output)
                       ) if local else self.connect
            return Engine(self.settings, self.inventory, transport_factory=connect,
                          outbound_targets=outbound_targets, vantage_connect=self.connect)
        return self._default_engine

    @cached_property
    def _default_engine(self) -> Checker:
        return self._engine or Engine(self.settings, self.inventory, transport_factory=self.connect)

    @cached_property
    def store(self) -> Store:
        """Audit log, plans, changes, host locks, reports, what replicas share: the store
        MAILCHECK_DB_URL names (default: the SQLite file settings.db_path)."""
        return self._store or open_store(self.settings.store_url)

    async def aclose(self) -> None:
        """Close the store if this wiring opened it (a PostgreSQL pool); a given one stays open."""
        if self._store is None and "store" in self.__dict__:
            await self.store.close()

    def fix_service(self, *, group_members: GroupMembers | None = None) -> FixService:
        """Fixes through `connect`, verified by the engine; `group_members` resolves
        approver user groups (Slack's usergroups.users.list when serving)."""
        return FixService(settings=self.settings, inventory=self.inventory, store=self.store,
                          connect=self.connect, verifier=engine_verifier(self.engine()),
                          group_members=group_members)
