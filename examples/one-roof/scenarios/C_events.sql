-- scenario: issue_event_simulation
-- C issue/event simulation (rollback-only). Three fail-closed layers: an inactive type
-- emits nothing even with the emit trigger switched on; the outbox refuses an inactive or
-- unregistered type; an event cannot be marked delivered while the dispatcher is
-- disabled. Activation (the registry flip) makes emission work. No dispatcher exists
-- inside the database. The emit trigger, disabled on a clone, is re-enabled inside this
-- transaction only. Issues are identified by max(id): the file runs in one transaction on
-- an isolated clone.

-- assert: every event type is inactive before the simulation
-- expect: value=0
select count(*)
from ops.event_type_registry
where active;

-- step: switch the emit trigger on (a clone has it disabled) and open an issue while issue.opened is inactive
alter table ops.issues enable trigger emit_issue_event;
insert into ops.issues (object_id, kind, status)
select min(o.id), 'data_quality', 'open'
from core.objects o;

-- assert: an inactive event type emits nothing
-- expect: value=0
select count(*)
from ops.events e
where e.payload ->> 'issue_id' = (select max(i.id)::text from ops.issues i);

-- assert: a direct outbox insert of an inactive type is refused
-- expect: error=P0001
insert into ops.events (event_type, payload)
values ('issue.opened', '{"source": "scenario C"}');

-- assert: a direct outbox insert of an unregistered type is refused
-- expect: error=P0001
insert into ops.events (event_type, payload)
values ('no.such.type', '{"source": "scenario C"}');

-- step: activate issue.opened (the governed registry flip) and open another issue
update ops.event_type_registry
set active = true
where code = 'issue.opened';
insert into ops.issues (object_id, kind, status)
select max(o.id), 'incident', 'open'
from core.objects o;

-- assert: activation makes the issue emit exactly one event
-- expect: value=1
select count(*)
from ops.events e
where e.payload ->> 'issue_id' = (select max(i.id)::text from ops.issues i);

-- assert: the emitted event waits in the outbox as pending
-- expect: value=pending
select e.status
from ops.events e
where e.payload ->> 'issue_id' = (select max(i.id)::text from ops.issues i);

-- assert: dispatch (marking delivered) is refused while the dispatcher is disabled
-- expect: error=P0001
update ops.events
set status = 'delivered'
where payload ->> 'issue_id' = (select max(i.id)::text from ops.issues i);

-- assert: no function in the database delivers, listens or reaches outside
-- expect: empty
select p.oid::regprocedure::text
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
where n.nspname not in ('pg_catalog', 'information_schema')
  and p.prosrc ~* '(pg_notify|\mnotify\M|\mlisten\M|dblink|pg_net|http_(get|post)|lo_export|\mprogram\M)';

-- assert: no listener, scheduler, outward extension or foreign server
-- expect: empty
select 'listening on ' || c
from pg_listening_channels() c
union all
select 'extension ' || x.extname
from pg_extension x
where x.extname in ('dblink', 'postgres_fdw', 'pg_cron', 'pg_net', 'http', 'pgsql_http',
                    'aws_lambda', 'pg_background', 'pgagent')
union all
select 'foreign server ' || s.srvname
from pg_foreign_server s;
