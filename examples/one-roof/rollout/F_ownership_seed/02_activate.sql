-- artifact: F_prod_02_activate
-- gate: ospa >= 1
-- requires: F_prod_01_materialize_candidates
-- expect-delta: core.ownership +0
-- expect-delta: core.ownership ~candidates
-- expect-delta: core.ownership -0
-- stop: gap != 0 or candidates != 0
-- auto: true
--
-- Promote every responsibility candidate to active (candidates is read at the start of
-- this transaction and equals the gap materialised by 01). The partial unique index
-- ownership_one_active_responsibility refuses a second active owner should one appear.
update core.ownership
set status = 'active',
    since = now()
where role = 'responsibility'
  and status = 'candidate';
