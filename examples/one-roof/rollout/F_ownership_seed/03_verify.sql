-- artifact: F_prod_03_verify
-- gate: ospa >= 1
-- requires: F_prod_02_activate
-- expect-delta: core.ownership +0
-- expect-delta: core.ownership ~0
-- expect-delta: core.ownership -0
-- stop: gap != 0 or candidates != 0 or owned != objects or coverage < 100
-- auto: false
--
-- Read-only verification after the auto-executable set: every object has exactly one
-- active responsibility owner (coverage 100%).
select (select count(*) from core.v_ownership_gap) as gap,
       (select count(distinct object_id) from core.ownership
        where role = 'responsibility' and status = 'active') as owned,
       (select count(*) from core.objects) as objects;
