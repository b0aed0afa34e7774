-- scenario: dot_boundary_rehearsal
-- D DOT boundary (rehearsal, rollback-only). Registering a DOT writes its birth; the
-- birth and the registration vanish together on rollback; executing a DOT inside the
-- database is refused (execution belongs to a runner outside it).

-- step: register a DOT
insert into ops.dot_registry (code, handler, status)
values ('DOT-SCENARIO-D', 'runner.scenario:d', 'registered');

-- assert: registration writes exactly one birth_registry row
-- expect: value=1
select count(*)
from ops.birth_registry b
where b.entity_kind = 'dot' and b.entity_id = 'DOT-SCENARIO-D';

-- assert: in-database execution is refused
-- expect: error=P0001
insert into ops.dot_runs (dot_code, runner)
values ('DOT-SCENARIO-D', 'in-database');

-- step: register a second DOT inside a savepoint, then roll the savepoint back
savepoint d_reversible;
insert into ops.dot_registry (code, handler, status)
values ('DOT-SCENARIO-D-REVERSIBLE', 'runner.scenario:d', 'registered');
rollback to savepoint d_reversible;
release savepoint d_reversible;

-- assert: a rolled-back registration leaves neither a registry row nor a birth
-- expect: value=0
select (select count(*) from ops.dot_registry where code = 'DOT-SCENARIO-D-REVERSIBLE')
     + (select count(*) from ops.birth_registry
        where entity_kind = 'dot' and entity_id = 'DOT-SCENARIO-D-REVERSIBLE');
