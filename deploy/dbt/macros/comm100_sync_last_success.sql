{#- The loaded_at_query of every source of `resource`: when the stalest partner last had a
    successful run of it. A cycle that finds nothing new still records its success in sync_runs
    but moves no updated_at, so the tables' own timestamps cannot tell fresh from stale.
    Failed, skipped, interrupted and partial runs do not count. -#}
{% macro comm100_sync_last_success(resource) -%}
select min(last_success) from (
    select partner_id, max(finished_at) as last_success
    from {{ source('comm100_sync', 'sync_runs') }}
    where resource = '{{ resource }}' and status = 'success'
    {%- if var('comm100_sync_partner_ids') %}
      and partner_id in (
        {%- for partner in var('comm100_sync_partner_ids') -%}
        '{{ partner }}'{{ ", " if not loop.last }}
        {%- endfor -%}
      )
    {%- endif %}
    group by partner_id
) as last_successes
{%- endmacro %}
