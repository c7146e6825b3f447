-- Argo CD resource actions for modelrollout.io/ModelExperiment: which apply now.
--
-- promote, abort and pause act on a running experiment only (as the
-- operator and `kubectl mexp` do); resume only undoes spec.paused; restart
-- is offered once the experiment has finished (abort first to re-run a
-- running one).  Argo CD sandbox: base, table and a reduced os library.
local FINAL = { Succeeded = true, RolledBack = true, Failed = true }

local phase = nil
if type(obj.status) == "table" then
  phase = obj.status.phase
end
local finished = phase ~= nil and FINAL[phase] == true
local paused = type(obj.spec) == "table" and obj.spec.paused == true

local actions = {}
actions["promote"] = { ["disabled"] = finished, ["displayName"] = "Promote: candidate to 100%" }
actions["abort"] = { ["disabled"] = finished, ["displayName"] = "Abort: baseline back to 100%" }
actions["pause"] = { ["disabled"] = finished or paused, ["displayName"] = "Pause (spec.paused)" }
actions["resume"] = { ["disabled"] = not paused, ["displayName"] = "Resume (spec.paused)" }
actions["restart"] = { ["disabled"] = not finished, ["displayName"] = "Restart from the first step" }
return actions
