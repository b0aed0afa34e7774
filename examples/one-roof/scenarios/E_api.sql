-- scenario: api_contract
-- E UI/API contract (rollback-only). Additive DDL only: a new schema "api" with eight
-- read-only views, the eight endpoints. Each view has one column "j" (jsonb), one JSON
-- object per row, of a declared shape. Nothing existing is altered. Every view reads
-- through a subquery, so PostgreSQL does not make it automatically updatable: the
-- endpoints cannot be written through.
--
--   api.v_objects          {id:number, kind:string, name:string, created_at:string, created_by:number}
--   api.v_actors           {id:number, name:string, level:string, active:boolean}
--   api.v_ownership        {object_id:number, actor_id:number, role:string, status:string, since:string}
--   api.v_ownership_gap    {object_id:number, kind:string, name:string}
--   api.v_proposals        {code:string, title:string, level_required:string, status:string, approvals:number}
--   api.v_laws             {code:string, version:number, status:string}
--   api.v_event_types      {code:string, active:boolean, description:string}
--   api.v_status           {objects:number, gap:number, ospa:number, active_event_types:number, dispatcher:boolean}

-- step: create the api schema and its eight endpoint views
create schema api;

create view api.v_objects as
select s.j from (
    select o.id, jsonb_build_object('id', o.id, 'kind', o.kind, 'name', o.name,
                                    'created_at', o.created_at, 'created_by', o.created_by) as j
    from core.objects o
) s;

create view api.v_actors as
select s.j from (
    select a.id, jsonb_build_object('id', a.id, 'name', a.name, 'level', a.level,
                                    'active', a.active) as j
    from core.actors a
) s;

create view api.v_ownership as
select s.j from (
    select w.id, jsonb_build_object('object_id', w.object_id, 'actor_id', w.actor_id,
                                    'role', w.role, 'status', w.status, 'since', w.since) as j
    from core.ownership w
) s;

create view api.v_ownership_gap as
select s.j from (
    select g.object_id, jsonb_build_object('object_id', g.object_id, 'kind', g.kind,
                                           'name', g.name) as j
    from core.v_ownership_gap g
) s;

create view api.v_proposals as
select s.j from (
    select p.code, jsonb_build_object(
               'code', p.code, 'title', p.title, 'level_required', p.level_required,
               'status', p.status,
               'approvals', (select count(*) from gov.os_proposal_approvals ap
                             where ap.proposal_code = p.code)) as j
    from gov.os_proposals p
) s;

create view api.v_laws as
select s.j from (
    select l.code, l.version, jsonb_build_object('code', l.code, 'version', l.version,
                                                 'status', l.status) as j
    from gov.laws l
) s;

create view api.v_event_types as
select s.j from (
    select r.code, jsonb_build_object('code', r.code, 'active', r.active,
                                      'description', r.description) as j
    from ops.event_type_registry r
) s;

create view api.v_status as
select s.j from (
    select jsonb_build_object(
               'objects', (select count(*) from core.objects),
               'gap', (select count(*) from core.v_ownership_gap),
               'ospa', (select count(*) from gov.os_proposal_approvals),
               'active_event_types', (select count(*) from ops.event_type_registry where active),
               'dispatcher', coalesce((select bool_or(d.enabled) from ops.dispatch_settings d), false)
           ) as j
) s;

-- assert: api.v_objects returns one object-shaped row per object, read-only
-- expect: true
select count(*) = (select count(*) from core.objects)
   and coalesce(bool_and(
           jsonb_typeof(v.j) = 'object'
           and v.j ?& array['id', 'kind', 'name', 'created_at', 'created_by']
           and jsonb_typeof(v.j -> 'id') = 'number'
           and jsonb_typeof(v.j -> 'kind') = 'string'
           and jsonb_typeof(v.j -> 'name') = 'string'
           and jsonb_typeof(v.j -> 'created_at') = 'string'
           and jsonb_typeof(v.j -> 'created_by') = 'number'), true)
   and (select t.is_updatable = 'NO' and t.is_insertable_into = 'NO'
        from information_schema.views t
        where t.table_schema = 'api' and t.table_name = 'v_objects')
from api.v_objects v;

-- assert: api.v_actors returns one actor-shaped row per actor, read-only
-- expect: true
select count(*) = (select count(*) from core.actors)
   and coalesce(bool_and(
           v.j ?& array['id', 'name', 'level', 'active']
           and jsonb_typeof(v.j -> 'id') = 'number'
           and jsonb_typeof(v.j -> 'name') = 'string'
           and v.j ->> 'level' in ('L1', 'L2', 'L3', 'L4')
           and jsonb_typeof(v.j -> 'active') = 'boolean'), true)
   and (select t.is_updatable = 'NO' and t.is_insertable_into = 'NO'
        from information_schema.views t
        where t.table_schema = 'api' and t.table_name = 'v_actors')
from api.v_actors v;

-- assert: api.v_ownership returns one ownership-shaped row per ownership row, read-only
-- expect: true
select count(*) = (select count(*) from core.ownership)
   and coalesce(bool_and(
           v.j ?& array['object_id', 'actor_id', 'role', 'status', 'since']
           and jsonb_typeof(v.j -> 'object_id') = 'number'
           and jsonb_typeof(v.j -> 'actor_id') = 'number'
           and jsonb_typeof(v.j -> 'role') = 'string'
           and v.j ->> 'status' in ('candidate', 'active', 'retired')
           and jsonb_typeof(v.j -> 'since') = 'string'), true)
   and (select t.is_updatable = 'NO' and t.is_insertable_into = 'NO'
        from information_schema.views t
        where t.table_schema = 'api' and t.table_name = 'v_ownership')
from api.v_ownership v;

-- assert: api.v_ownership_gap returns exactly the gap, gap-shaped, read-only
-- expect: true
select count(*) = (select count(*) from core.v_ownership_gap)
   and coalesce(bool_and(
           v.j ?& array['object_id', 'kind', 'name']
           and jsonb_typeof(v.j -> 'object_id') = 'number'
           and jsonb_typeof(v.j -> 'kind') = 'string'
           and jsonb_typeof(v.j -> 'name') = 'string'), true)
   and (select t.is_updatable = 'NO' and t.is_insertable_into = 'NO'
        from information_schema.views t
        where t.table_schema = 'api' and t.table_name = 'v_ownership_gap')
from api.v_ownership_gap v;

-- assert: api.v_proposals returns proposal-shaped rows with approval counts, read-only
-- expect: true
select count(*) = (select count(*) from gov.os_proposals)
   and coalesce(bool_and(
           v.j ?& array['code', 'title', 'level_required', 'status', 'approvals']
           and jsonb_typeof(v.j -> 'code') = 'string'
           and jsonb_typeof(v.j -> 'title') = 'string'
           and jsonb_typeof(v.j -> 'level_required') = 'string'
           and jsonb_typeof(v.j -> 'status') = 'string'
           and jsonb_typeof(v.j -> 'approvals') = 'number'), true)
   and coalesce(sum((v.j ->> 'approvals')::bigint), 0)
     = (select count(*) from gov.os_proposal_approvals)
   and (select t.is_updatable = 'NO' and t.is_insertable_into = 'NO'
        from information_schema.views t
        where t.table_schema = 'api' and t.table_name = 'v_proposals')
from api.v_proposals v;

-- assert: api.v_laws returns law-version-shaped rows, read-only
-- expect: true
select count(*) = (select count(*) from gov.laws)
   and coalesce(bool_and(
           v.j ?& array['code', 'version', 'status']
           and jsonb_typeof(v.j -> 'code') = 'string'
           and jsonb_typeof(v.j -> 'version') = 'number'
           and v.j ->> 'status' in ('draft', 'active', 'retired')), true)
   and (select t.is_updatable = 'NO' and t.is_insertable_into = 'NO'
        from information_schema.views t
        where t.table_schema = 'api' and t.table_name = 'v_laws')
from api.v_laws v;

-- assert: api.v_event_types returns event-type-shaped rows, read-only
-- expect: true
select count(*) = (select count(*) from ops.event_type_registry)
   and coalesce(bool_and(
           v.j ?& array['code', 'active', 'description']
           and jsonb_typeof(v.j -> 'code') = 'string'
           and jsonb_typeof(v.j -> 'active') = 'boolean'
           and jsonb_typeof(v.j -> 'description') = 'string'), true)
   and (select t.is_updatable = 'NO' and t.is_insertable_into = 'NO'
        from information_schema.views t
        where t.table_schema = 'api' and t.table_name = 'v_event_types')
from api.v_event_types v;

-- assert: api.v_status returns one status object whose figures match the database, read-only
-- expect: true
select count(*) = 1
   and bool_and(
           v.j ?& array['objects', 'gap', 'ospa', 'active_event_types', 'dispatcher']
           and (v.j ->> 'objects')::bigint = (select count(*) from core.objects)
           and (v.j ->> 'gap')::bigint = (select count(*) from core.v_ownership_gap)
           and (v.j ->> 'ospa')::bigint = (select count(*) from gov.os_proposal_approvals)
           and jsonb_typeof(v.j -> 'active_event_types') = 'number'
           and jsonb_typeof(v.j -> 'dispatcher') = 'boolean')
   and (select t.is_updatable = 'NO' and t.is_insertable_into = 'NO'
        from information_schema.views t
        where t.table_schema = 'api' and t.table_name = 'v_status')
from api.v_status v;
