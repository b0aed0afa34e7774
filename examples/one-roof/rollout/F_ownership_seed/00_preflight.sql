-- artifact: F_prod_00_preflight
-- gate: ospa >= 1
-- expect-delta: core.ownership +0
-- expect-delta: core.ownership ~0
-- expect-delta: core.ownership -0
-- stop: candidates != 0 or president != 1
-- auto: true
--
-- Read-only preflight of the production ownership seed. Halts (nothing to roll back) if
-- responsibility candidates already exist (01 would double them) or if there is not
-- exactly one active L4 President (the fallback owner chosen by 01).
select (select count(*) from core.v_ownership_gap) as gap,
       (select count(*) from core.ownership
        where role = 'responsibility' and status = 'candidate') as candidates,
       (select count(*) from core.actors where level = 'L4' and active) as presidents;
