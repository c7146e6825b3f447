-- Argo CD health check for modelrollout.io/ModelExperiment.
--
-- Argo CD runs this in gopher-lua (Lua 5.1) with the live object in `obj`,
-- and loads only the base, table and a reduced os library: no string.* or
-- math.* here.  Every phase of the operator has a mapping (a test checks it
-- against the operator's Phase enum); modelrollout's examples/05-argocd/README.md
-- says why Paused is Healthy and why a phase this script does not know is Unknown.
local HEALTH = {
  Pending = "Progressing",
  Progressing = "Progressing",
  Paused = "Healthy", -- deliberate and stable: Suspended would hold every sync of the app
  Succeeded = "Healthy",
  RolledBack = "Degraded",
  Failed = "Degraded",
}
local DEFAULT_STEPS = 4 -- spec.canary.steps defaults to [5, 25, 50, 100]

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

-- "step 2/4, candidate 25%": where the experiment is.
local function progress(spec, status)
  local parts = {}
  local strategy = spec.strategy
  if strategy == nil or strategy == "Canary" then
    local total = DEFAULT_STEPS
    if type(spec.canary) == "table" and type(spec.canary.steps) == "table" and #spec.canary.steps > 0 then
      total = #spec.canary.steps
    end
    table.insert(parts, "step " .. text(status.step or 0) .. "/" .. total)
  end
  if status.candidateWeight ~= nil then
    table.insert(parts, "candidate " .. text(status.candidateWeight) .. "%")
  end
  return table.concat(parts, ", ")
end

-- "<Phase>: step 2/4, candidate 25%. <reason>: <message>"
local function describe(phase, spec, status)
  local out = text(phase)
  local where = progress(spec, status)
  if where ~= "" then
    out = out .. ": " .. where
  end
  local reason, message = text(status.reason), text(status.message)
  if reason == text(phase) then
    reason = "" -- "Paused: ... Paused: ..." says it twice
  end
  if reason ~= "" and message ~= "" then
    out = out .. ". " .. reason .. ": " .. message
  elseif reason .. message ~= "" then
    out = out .. ". " .. reason .. message
  end
  return out
end

local hs = {}
local status = obj.status
if type(status) ~= "table" or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end

local spec = obj.spec
if type(spec) ~= "table" then
  spec = {}
end
local generation, observed = nil, tonumber(status.observedGeneration)
if type(obj.metadata) == "table" then
  generation = tonumber(obj.metadata.generation)
end
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. generation
    .. " (last observed " .. observed .. ")"
  return hs
end

local phase = status.phase
hs.status = HEALTH[phase]
if hs.status == nil then
  hs.status = "Unknown"
  hs.message = describe(phase, spec, status)
    .. " (phase unknown to this health check: update it to the operator's release)"
  return hs
end
hs.message = describe(phase, spec, status)
return hs
