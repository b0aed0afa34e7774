-- A regression suite, part 3: ops (event registry and outbox, DOT boundary).
-- On a clone the emit_% triggers are disabled and the job leases cleared; these checks
-- hold either way.

-- check: every_event_type_registered
-- expect: empty
select e.id, e.event_type
from ops.events e
left join ops.event_type_registry r on r.code = e.event_type
where r.code is null;

-- check: active_event_types_only_with_dispatcher
-- expect: empty
select r.code
from ops.event_type_registry r
where r.active
  and not coalesce((select bool_or(d.enabled) from ops.dispatch_settings d), false);

-- check: no_delivered_event_without_dispatcher
-- expect: empty
select e.id
from ops.events e
where e.status = 'delivered'
  and not coalesce((select bool_or(d.enabled) from ops.dispatch_settings d), false);

-- check: no_in_database_dispatcher_function
-- expect: empty
select p.oid::regprocedure::text as function
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
where n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname !~ '^pg_toast'
  and p.prosrc ~* '(pg_notify|\mnotify\M|\mlisten\M|dblink|pg_net|http_(get|post)|lo_export|\mprogram\M)';

-- check: no_outward_extension_or_foreign_server
-- expect: empty
select 'extension ' || x.extname
from pg_extension x
where x.extname in ('dblink', 'postgres_fdw', 'pg_cron', 'pg_net', 'http', 'pgsql_http',
                    'aws_lambda', 'pg_background', 'pgagent')
union all
select 'foreign server ' || s.srvname
from pg_foreign_server s;

-- check: outbox_and_dot_guards_enabled
-- expect: value=3
select count(*)
from pg_trigger t
where t.tgenabled in ('O', 'A')
  and ((t.tgrelid = 'ops.events'::regclass and t.tgname in ('guard_outbox_insert', 'guard_outbox_dispatch'))
    or (t.tgrelid = 'ops.dot_runs'::regclass and t.tgname = 'refuse_dot_execution'));

-- check: issue_emit_trigger_present
-- expect: value=1
select count(*)
from pg_trigger t
where t.tgrelid = 'ops.issues'::regclass
  and t.tgname = 'emit_issue_event';

-- check: no_dot_executed_in_database
-- expect: value=0
select count(*)
from ops.dot_runs;

-- check: every_dot_has_birth
-- expect: empty
select d.code
from ops.dot_registry d
left join ops.birth_registry b on b.entity_kind = 'dot' and b.entity_id = d.code
where b.id is null;
