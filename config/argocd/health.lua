-- Argo CD health check for TmiInstance (tmi.dev/v1alpha1).
-- Install it as `resource.customizations.health.tmi.dev_TmiInstance` in the argocd-cm ConfigMap
-- (docs/gitops.md). It reads the status the way kstatus does, so Argo CD, Flux and `kubectl wait` agree:
--   * a status older than the spec (observedGeneration behind metadata.generation) is never trusted;
--   * Stalled=True means the operator cannot proceed without a change: Degraded;
--   * Reconciling=True means work in progress: Progressing;
--   * otherwise Ready decides.
local hs = {}

local function conditions(o)
  local byType = {}
  if o.status ~= nil and o.status.conditions ~= nil then
    for _, c in ipairs(o.status.conditions) do
      byType[c.type] = c
    end
  end
  return byType
end

local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
if generation ~= nil and obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local c = conditions(obj)
-- A condition written for an older generation describes an older spec.
for _, cond in pairs(c) do
  if generation ~= nil and cond.observedGeneration ~= nil and cond.observedGeneration < generation then
    hs.status = "Progressing"
    hs.message = "Condition " .. cond.type .. " is from generation " .. cond.observedGeneration
    return hs
  end
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Reconciliation is suspended (spec.suspend)"
  return hs
end
if c.Stalled ~= nil and c.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(c.Stalled)
  return hs
end
if c.Reconciling ~= nil and c.Reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(c.Reconciling)
  return hs
end
if c.Ready ~= nil and c.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(c.Ready)
  return hs
end
hs.status = "Progressing"
if c.Ready ~= nil then
  hs.message = describe(c.Ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
