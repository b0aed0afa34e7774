"""The production roles: what the reader may not hold, and the SQL that creates one that holds none.

A READ ONLY transaction does not stop signals, slots, file and program access, statistics
resets or a configuration reload: privileges do. The production read role is therefore
checked when a session opens: no superuser, REPLICATION, BYPASSRLS, CREATEROLE or CREATEDB,
no membership (direct or through other roles) in the predefined roles that reach outside
the database, and no INSERT, UPDATE, DELETE or TRUNCATE anywhere. `excess` is a pure function
over the rows of `PRIVILEGES_QUERY`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ROLE_ATTRIBUTES = ("superuser", "replication", "bypassrls", "createrole", "createdb")
_ATTRIBUTE_FIX = {
    "superuser": "NOSUPERUSER",
    "replication": "NOREPLICATION",
    "bypassrls": "NOBYPASSRLS",
    "createrole": "NOCREATEROLE",
    "createdb": "NOCREATEDB",
}
# Predefined roles whose members reach outside the database or other sessions.
PRIVILEGED_ROLES = (
    "pg_signal_backend",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_checkpoint",
    "pg_maintain",
    "pg_create_subscription",
    "pg_signal_autovacuum_worker",
    "pg_write_all_data",
)
WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")

# One row per role the session's user is, or is a member of (directly or not): its name,
# whether it is the user itself, its attributes; then one row per kind of write privilege
# the user holds on user relations: how many, a few names, how many it owns.
PRIVILEGES_QUERY = """with recursive member_of(oid) as (
    select r.oid from pg_catalog.pg_roles r where r.rolname = current_user
    union
    select m.roleid from pg_catalog.pg_auth_members m join member_of on m.member = member_of.oid
)
select 'role', r.rolname::text, r.rolname = current_user,
    pg_catalog.array_remove(array[case when r.rolsuper then 'superuser' end,
        case when r.rolreplication then 'replication' end,
        case when r.rolbypassrls then 'bypassrls' end,
        case when r.rolcreaterole then 'createrole' end,
        case when r.rolcreatedb then 'createdb' end], null), 0::int8, 0::int8
from member_of join pg_catalog.pg_roles r on r.oid = member_of.oid
union all
select 'write', p.privilege, false,
    (pg_catalog.array_agg(pg_catalog.quote_ident(n.nspname) || '.'
        || pg_catalog.quote_ident(c.relname) order by n.nspname, c.relname))[1:3],
    pg_catalog.count(*), pg_catalog.count(*) filter (where pg_catalog.pg_has_role(c.relowner,
        'MEMBER'))
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
cross join (values ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) p(privilege)
where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp)'
  and case when c.relkind = 'S' then p.privilege = 'UPDATE'
        and pg_catalog.has_sequence_privilege(c.oid, 'UPDATE')
      else pg_catalog.has_table_privilege(c.oid, p.privilege)
        or (p.privilege in ('INSERT', 'UPDATE')
            and pg_catalog.has_any_column_privilege(c.oid, p.privilege)) end
group by p.privilege"""

# The applier's check, one row per need (kind, object, privilege): whether the session's
# user holds it; NULL when the object does not exist.
APPLIER_PRIVILEGES_QUERY = """select n.kind, n.object, n.privilege, case n.kind
    when 'table' then case
        when n.schema <> '' and pg_catalog.to_regnamespace(pg_catalog.quote_ident(n.schema))
            is null then null
        when n.schema <> '' and not pg_catalog.has_schema_privilege(n.schema, 'USAGE')
            then false
        when pg_catalog.to_regclass(n.object) is null then null
        when n.privilege = 'OWNER' then pg_catalog.pg_has_role((select c.relowner
            from pg_catalog.pg_class c where c.oid = pg_catalog.to_regclass(n.object)), 'USAGE')
        when n.privilege = 'SCHEMA CREATE' then pg_catalog.has_schema_privilege((select
            c.relnamespace from pg_catalog.pg_class c
            where c.oid = pg_catalog.to_regclass(n.object)), 'CREATE')
        when n.privilege = 'DEFAULTS' then (select coalesce(pg_catalog.bool_and(
                pg_catalog.has_sequence_privilege(d.refobjid, 'USAGE')), true)
            from pg_catalog.pg_attrdef a join pg_catalog.pg_depend d
              on d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass and d.objid = a.oid
             and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
            join pg_catalog.pg_class s on s.oid = d.refobjid and s.relkind = 'S'
            where a.adrelid = pg_catalog.to_regclass(n.object))
        else pg_catalog.has_table_privilege(pg_catalog.to_regclass(n.object), n.privilege) end
    when 'schema' then case
        when pg_catalog.to_regnamespace(pg_catalog.quote_ident(coalesce(nullif(n.object, ''),
            pg_catalog.current_schema()))) is null then null
        else pg_catalog.has_schema_privilege(coalesce(nullif(n.object, ''),
            pg_catalog.current_schema()), n.privilege) end
    else pg_catalog.has_database_privilege(pg_catalog.current_database(), n.privilege) end
from rows from (pg_catalog.unnest(%s::text[]), pg_catalog.unnest(%s::text[]),
    pg_catalog.unnest(%s::text[]), pg_catalog.unnest(%s::text[]))
    as n(kind, object, privilege, schema)"""


@dataclass(frozen=True)
class Excess:
    """One privilege the read role holds and must not, with the statement that removes it."""

    what: str
    fix: str

    def describe(self) -> str:
        return f"{self.what} (fix: {self.fix})"


@dataclass(frozen=True)
class RolePrivileges:
    """The effective privileges of a production role, as read from the server."""

    user: str
    attributes: dict[str, tuple[str, ...]]  # role → its attributes (the user and its groups)
    memberships: tuple[str, ...]  # every role the user is a member of, directly or not
    writes: dict[str, tuple[int, int, tuple[str, ...]]]  # privilege → (count, owned, examples)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> RolePrivileges:
        user = ""
        attributes: dict[str, tuple[str, ...]] = {}
        memberships: list[str] = []
        writes: dict[str, tuple[int, int, tuple[str, ...]]] = {}
        for kind, name, is_self, items, count, owned in rows:
            if kind == "role":
                attributes[str(name)] = tuple(str(f) for f in items or ())
                if is_self:
                    user = str(name)
                else:
                    memberships.append(str(name))
            else:
                writes[str(name)] = (int(count), int(owned), tuple(str(e) for e in items or ()))
        return cls(user, attributes, tuple(sorted(memberships)), writes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "attributes": {role: list(flags) for role, flags in self.attributes.items()},
            "member_of": list(self.memberships),
            "write_privileges": {
                privilege: {"relations": count, "owned": owned, "examples": list(examples)}
                for privilege, (count, owned, examples) in self.writes.items()
            },
            "excess": [e.describe() for e in excess(self)],
        }


def excess(privileges: RolePrivileges) -> list[Excess]:
    """Every privilege the role holds beyond reading, each with its GRANT/REVOKE fix."""
    user = privileges.user
    quoted = quote_ident(user)
    found: list[Excess] = []
    for role, flags in sorted(privileges.attributes.items(), key=lambda kv: kv[0] != user):
        for flag in flags:
            if role == user:
                found.append(Excess(flag, f"ALTER ROLE {quoted} {_ATTRIBUTE_FIX[flag]}"))
            else:
                found.append(
                    Excess(
                        f"{flag} through membership in {role}",
                        f"REVOKE {quote_ident(role)} FROM {quoted}",
                    )
                )
    for role in privileges.memberships:
        if role in PRIVILEGED_ROLES:
            found.append(Excess(f"member of {role}", f"REVOKE {role} FROM {quoted}"))
    # privileges held on the same relations are named together
    groups: dict[tuple[int, int, tuple[str, ...]], list[str]] = {}
    for privilege in WRITE_PRIVILEGES:
        if privilege in privileges.writes:
            groups.setdefault(privileges.writes[privilege], []).append(privilege)
    for (count, owned, examples), held in groups.items():
        sample = ", ".join(examples) + (", …" if count > len(examples) else "")
        names = ", ".join(held)
        what = f"{names} on {count} relation{'s' if count != 1 else ''} ({sample})"
        if owned:
            fix = f"use a role that owns no tables: {user} owns {owned} of them"
        else:
            schemas = sorted({e.rsplit(".", 1)[0] for e in examples})
            fix = "; ".join(
                f"REVOKE {names} ON ALL TABLES IN SCHEMA {schema} FROM {quoted}"
                for schema in schemas
            )
        found.append(Excess(what, fix))
    return found


def refusal_message(privileges: RolePrivileges) -> str:
    """The one line that refuses a privileged production role."""
    items = "; ".join(e.describe() for e in excess(privileges))
    return (
        f"refused: the production role {privileges.user!r} may do more than read: {items}. "
        "Connect as a least-privilege reader (docs/safety.md shows the SQL), or accept this "
        "role with [guard] allow_privileged_role = true"
    )


def quote_ident(name: str) -> str:
    """A name as SQL writes it: bare when PostgreSQL would read it back the same, else quoted."""
    if (
        name
        and (name[0].isalpha() or name[0] == "_")
        and all(c.isalnum() or c == "_" for c in name)
        and name == name.lower()
    ):
        return name
    return '"' + name.replace('"', '""') + '"'


READER_ROLE = "oneroof_reader"


def reader_sql(
    role: str = READER_ROLE,
    database: str = "app",
    *,
    server_version_num: int = 140000,
    schemas: Sequence[str] = ("public",),
) -> str:
    """The SQL that creates a least-privilege production reader.

    From PostgreSQL 14 `pg_read_all_data` reads every table; 13 has no such role, so each of
    `schemas` is granted instead (and the tables its owner creates later, by default).
    The same text is shown in docs/safety.md and used by the demo and the test fixtures.
    """
    quoted = quote_ident(role)
    db = quote_ident(database)
    if server_version_num >= 140000:
        reads = f"GRANT pg_read_all_data TO {quoted};\n"
    else:
        reads = "-- PostgreSQL 13 has no pg_read_all_data: grant each schema oneroof reads\n"
        for schema in schemas:
            name = quote_ident(schema)
            reads += (
                f"GRANT USAGE ON SCHEMA {name} TO {quoted};\n"
                f"GRANT SELECT ON ALL TABLES IN SCHEMA {name} TO {quoted};\n"
                f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA {name} TO {quoted};\n"
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {name} GRANT SELECT ON TABLES TO {quoted};\n"
            )
    return (
        f"CREATE ROLE {quoted} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
        " NOBYPASSRLS;\n"
        f"GRANT CONNECT ON DATABASE {db} TO {quoted};\n"
        f"{reads}"
        f"-- then give it a password: ALTER ROLE {quoted} PASSWORD '…' (or psql's \\password)\n"
        "-- in the database itself: the cluster identity lets oneroof tell production from\n"
        "-- the non-production server\n"
        f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_control_system() TO {quoted};\n"
    )
