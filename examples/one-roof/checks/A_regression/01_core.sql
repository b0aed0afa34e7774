-- A regression suite, part 1: core (actors, objects, responsibility ownership, the gap).
-- Every check is one read-only SELECT and holds for any --objects / --gap / --seed, before
-- and after ratification, before and after the F ownership seed, on production and on a
-- clone (emit_% triggers disabled, leases cleared).

-- check: actor_levels_in_domain
-- expect: empty
select a.id, a.level
from core.actors a
where a.level not in ('L1', 'L2', 'L3', 'L4');

-- check: exactly_one_active_president
-- expect: value=1
select count(*)
from core.actors a
where a.level = 'L4' and a.active;

-- check: no_orphan_ownership
-- expect: empty
select w.id, w.object_id, w.actor_id
from core.ownership w
left join core.objects o on o.id = w.object_id
left join core.actors a on a.id = w.actor_id
where o.id is null or a.id is null;

-- check: ownership_role_and_status_in_domain
-- expect: empty
select w.id, w.role, w.status
from core.ownership w
where w.role <> 'responsibility'
   or w.status not in ('candidate', 'active', 'retired');

-- check: at_most_one_active_owner_per_object
-- expect: empty
-- timeout: 5s
select w.object_id, count(*) as active_owners
from core.ownership w
where w.role = 'responsibility' and w.status = 'active'
group by w.object_id
having count(*) > 1;

-- check: one_active_owner_index_in_place
-- expect: true
select exists (
    select 1
    from pg_index i
    where i.indrelid = 'core.ownership'::regclass
      and i.indisunique
      and i.indisvalid
      and i.indpred is not null
);

-- check: gap_view_is_objects_minus_owned
-- expect: true
-- timeout: 5s
select (select count(*) from core.v_ownership_gap)
     = (select count(*) from core.objects)
     - (select count(distinct w.object_id)
        from core.ownership w
        where w.role = 'responsibility' and w.status = 'active');

-- check: active_owners_are_active_actors
-- expect: empty
select w.object_id, w.actor_id
from core.ownership w
join core.actors a on a.id = w.actor_id
where w.status = 'active' and not a.active;

-- check: ownership_not_before_object
-- expect: empty
select w.id, w.since, o.created_at
from core.ownership w
join core.objects o on o.id = w.object_id
where w.since < o.created_at;
