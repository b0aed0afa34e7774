-- artifact: F_prod_01_materialize_candidates
-- gate: ospa >= 1
-- requires: F_prod_00_preflight
-- expect-delta: core.ownership +gap
-- expect-delta: core.ownership ~0
-- expect-delta: core.ownership -0
-- stop: candidates != gap or gap_candidates != gap
-- auto: true
--
-- One candidate responsibility owner per object in the gap (gap is read at the start of
-- this transaction). Deterministic rule: the object's creator if that actor is active,
-- otherwise the active L4 President. Candidates close nothing yet: the gap is unchanged
-- after this artifact, and every gap object has exactly one candidate.
insert into core.ownership (object_id, actor_id, role, status, since)
select g.object_id,
       coalesce(
           (select c.id from core.actors c where c.id = g.created_by and c.active),
           (select p.id from core.actors p where p.level = 'L4' and p.active
            order by p.id limit 1)),
       'responsibility',
       'candidate',
       now()
from core.v_ownership_gap g
order by g.object_id;
