-- One row per period a site spent in one status: consecutive versions of site_history with the
-- same status (a rename, say, starts a version but not a period) are merged; a removal from the
-- API ends a period, and a restore starts a new one even in the same status. valid_from is when
-- a cycle first saw the status, not when it changed at Comm100 (the API does not say).
with versions as (
    select
        partner_id,
        site_id,
        status,
        valid_from,
        valid_to,
        started_by,
        ended_by,
        audit_id,
        lag(status) over by_site as previous_status,
        lag(valid_to) over by_site as previous_valid_to,
        lag(audit_id) over by_site as previous_audit_id
    from {{ source('comm100_sync', 'site_history') }}
    window by_site as (partition by partner_id, site_id order by valid_from, audit_id)
),

numbered as (
    select
        *,
        sum(
            case
                when previous_audit_id is null then 1
                when previous_status is distinct from status then 1
                -- The previous version ended by a delete: a gap, so a new period.
                when previous_valid_to is distinct from valid_from then 1
                else 0
            end
        ) over (
            partition by partner_id, site_id order by valid_from, audit_id
            rows between unbounded preceding and current row
        ) as period_number
    from versions
),

bounds as (
    select
        *,
        row_number() over (
            partition by partner_id, site_id, period_number order by valid_from, audit_id
        ) as from_start,
        row_number() over (
            partition by partner_id, site_id, period_number
            order by valid_from desc, audit_id desc
        ) as from_end
    from numbered
)

select
    first.partner_id,
    first.site_id,
    first.period_number,
    first.status,
    first.valid_from,
    last.valid_to,
    first.started_by,
    last.ended_by,
    last.valid_to is null as is_current,
    first.audit_id as started_by_audit_id
from bounds as first
inner join bounds as last
    on last.partner_id = first.partner_id
    and last.site_id = first.site_id
    and last.period_number = first.period_number
    and last.from_end = 1
where first.from_start = 1
