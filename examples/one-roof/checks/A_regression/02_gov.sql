-- A regression suite, part 2: gov (proposals, approvals and signatures, laws).
-- Nothing here depends on whether approvals exist yet: the suite holds before and after
-- the humans ratify APR-BOOT-AUTHMODEL-1.

-- check: boot_proposal_present
-- expect: value=1
select count(*)
from gov.os_proposals p
where p.code = 'APR-BOOT-AUTHMODEL-1';

-- check: proposal_payload_hash_matches_payload
-- expect: empty
select p.code
from gov.os_proposals p
where p.payload_sha256 <> encode(sha256(convert_to(p.payload::text, 'UTF8')), 'hex');

-- check: no_approval_without_proposal
-- expect: empty
select ap.proposal_code, ap.actor_id
from gov.os_proposal_approvals ap
left join gov.os_proposals p on p.code = ap.proposal_code
where p.code is null;

-- check: approval_level_is_signer_level
-- expect: empty
select ap.proposal_code, ap.actor_id, ap.level, a.level as actor_level
from gov.os_proposal_approvals ap
left join core.actors a on a.id = ap.actor_id
where a.id is null or a.level <> ap.level;

-- check: approval_signatures_are_hex
-- expect: empty
-- an Ed25519 signature (128 hex digits) or generate.py's 64-hex stand-in token
select ap.proposal_code, ap.actor_id
from gov.os_proposal_approvals ap
where ap.signature !~ '^([0-9a-f]{64}|[0-9a-f]{128})$';

-- check: ratified_proposals_carry_required_level
-- expect: empty
select p.code
from gov.os_proposals p
where p.status = 'ratified'
  and not exists (
      select 1
      from gov.os_proposal_approvals ap
      where ap.proposal_code = p.code and ap.level >= p.level_required
  );

-- check: at_most_one_active_law_version
-- expect: empty
select l.code, count(*) as active_versions
from gov.laws l
where l.status = 'active'
group by l.code
having count(*) > 1;

-- check: law_versions_contiguous
-- expect: empty
select l.code, min(l.version), max(l.version), count(*)
from gov.laws l
group by l.code
having min(l.version) <> 1 or max(l.version) <> count(*);
