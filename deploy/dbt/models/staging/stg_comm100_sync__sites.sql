-- The partner's live sites, one row each, with the name of their platform. The platform is
-- looked up among every platform ever seen, so a site keeps its platform's last known name after
-- the platform left the API (platform_is_live says so).
select
    sites.partner_id,
    sites.id as site_id,
    sites.company,
    sites.status,
    sites.website,
    sites.country_or_region,
    sites.time_zone,
    sites.external_id,
    sites.platform_id,
    platforms.name as platform_name,
    platforms.id is not null and platforms.deleted_at is null as platform_is_live,
    sites.first_seen_at,
    sites.updated_at
from {{ source('comm100_sync', 'sites_current') }} as sites
left join {{ source('comm100_sync', 'platforms') }} as platforms
    on platforms.partner_id = sites.partner_id
    and platforms.id = sites.platform_id
