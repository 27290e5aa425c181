"""Create a template's tables, queues, topics and keys in an AWS endpoint (moto locally).

The local stack is deployed from the same ``template.yaml`` files that SAM deploys to AWS,
as the same stacks in the same order (:data:`SYSTEM_STACKS`, docs/deploy.md): this module
reads them, resolves the intrinsic functions it needs (``Ref``, ``GetAtt``, ``Sub``,
``Join``, ``Select``, ``Split``, ``If`` with ``Equals``/``Not``/``And``/``Or``
conditions, ``AWS::NoValue``), resources' ``Condition``, SSM dynamic references
(``{{resolve:ssm:NAME}}``) and ``AWS::SSM::Parameter::Value<String>`` parameters, follows nested
``AWS::Serverless::Application`` locations, and creates each stateful resource through
boto3 - the SSM parameters stacks publish for each other included. It also resolves every
function's environment variables, so a module process gets exactly the variables Lambda
would give it, pointing at the local resources.

A celled stage (``deploy_system(cells=N)``, docs/deploy.md "Cells") deploys the loads
template N times, ``Cell=cell-1`` .. ``cell-N``, each as its own stack (``LoadsApp/cell-1``
..., names of its own), and gives every stack that declares ``LoadsCells`` N.

Two regions (docs/deploy.md "Regions"): a LocalCloud is one region, as a CloudFormation
stack is. The primary region's is deployed first (``PrimaryRegion``, ``ReplicaRegion`` in
its parameters), then the second region's with the same two: an
``AWS::DynamoDB::GlobalTable`` is created as AWS creates it, one table per replica region
(each with its stream, indexes and TTL), by the stack whose condition ``OwnsGlobalTables``
holds; the other region's stacks create none and use the replicas by name.
:meth:`StackResult.global_tables` names the tables a local replicator keeps in step.

Compute (functions, the HTTP API, alarms, log groups, IAM) is not created: locally each
function runs as its own process (see :mod:`relay.stack`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"

ROOT = Path(__file__).resolve().parent.parent
ROOT_TEMPLATE = ROOT / "template.yaml"

# The stacks of a stage, in deploy order (docs/deploy.md): each reads what it needs from the
# SSM parameters the earlier ones published (/relay/<stage>/...). The keys are the names the
# local stack knows them by (StackResult.children of the gateway stack, deployed last).
SYSTEM_STACKS: tuple[tuple[str, Path], ...] = (
    ("PlatformStack", ROOT / "platform" / "template.yaml"),
    ("NotificationsApp", ROOT / "modules" / "notifications" / "template.yaml"),
    ("LoadsApp", ROOT / "modules" / "loads" / "template.yaml"),
    ("GatepassApp", ROOT / "modules" / "gatepass" / "template.yaml"),
    ("NavigateApp", ROOT / "modules" / "navigate" / "template.yaml"),
    ("MessageApp", ROOT / "modules" / "message" / "template.yaml"),
)
# The celled module's stack (docs/deploy.md, Cells): with cells, one stack per cell, named
# "LoadsApp/<cell>" among the children, each deployed with Cell=<cell>; the stacks reading
# its values take the number of cells as LoadsCells (1: uncelled).
CELLED_STACK = "LoadsApp"
CELLS_PARAMETER = "LoadsCells"
MAX_CELLS = 4  # the templates' conditions (LoadsCell2 .. LoadsCell4)


def cell_names(cells: int) -> list[str]:
    """The cells of a stage with ``cells`` of them: none for 1 (uncelled), else cell-1..N."""
    if not 1 <= cells <= MAX_CELLS:
        raise ValueError(f"a stage has 1 to {MAX_CELLS} loads cells, not {cells}")
    return [] if cells == 1 else [f"cell-{k}" for k in range(1, cells + 1)]


class _NoValue:
    """``Ref AWS::NoValue``: the property, list item or join item is left out."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()
# A placeholder for the gateway stack's required secret ARN: locally the gateway gets its
# identity key from the environment (relay.stack.local_gateway_env), never from a secret.
LOCAL_IDENTITY_SECRET_ARN = (
    f"arn:aws:secretsmanager:{DEFAULT_REGION}:{ACCOUNT_ID}:secret:relay-local-identity"
)
SSM_VALUE_TYPE = re.compile(r"^AWS::SSM::Parameter::Value<(String|List<String>)>$")
DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:([a-z-]+):([^}]*)\}\}")
GLOBAL_TABLE = "AWS::DynamoDB::GlobalTable"
# What ``!GetAtt <Function>.Version.Version`` (the version SAM publishes) is locally: one
# process per function, never a published version.
LOCAL_FUNCTION_VERSION = "$LATEST"


class TemplateError(Exception):
    """The template uses something the local deployer cannot resolve."""


def load_template(path: Path) -> dict[str, Any]:
    # Imported here: the SAM translator (its YAML tags) is needed only to read a template,
    # not by everything that imports relay.stack (the unit tier must not load it).
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(path.read_text())


@dataclass
class Resource:
    ref: Any
    attrs: dict[str, Any] = field(default_factory=dict)
    # An AWS::DynamoDB::GlobalTable's replica regions (this stack's region first).
    replicas: list[str] = field(default_factory=list)


@dataclass
class StackResult:
    name: str
    path: Path
    template: dict[str, Any]
    parameters: dict[str, Any]
    resources: dict[str, Resource]
    outputs: dict[str, Any]
    children: dict[str, StackResult]
    # What deploy_system was given (the stage's parameters), to deploy it all again.
    inputs: dict[str, Any] = field(default_factory=dict)
    # Each function's environment, resolved when the stack deployed (as Lambda's is).
    environments: dict[str, dict[str, str]] = field(default_factory=dict)
    # Resources whose Condition was false: not created, as in CloudFormation.
    skipped: set[str] = field(default_factory=set)

    def find_function(self, logical_id: str) -> tuple[StackResult, dict[str, Any]]:
        res = self.template.get("Resources", {}).get(logical_id)
        if res and res["Type"] == "AWS::Serverless::Function":
            return self, res
        for child in self.children.values():
            try:
                return child.find_function(logical_id)
            except KeyError:
                pass
        raise KeyError(logical_id)

    def sqs_event_sources(self, logical_id: str) -> list[Resource]:
        """The deployed queues that trigger ``logical_id`` (its ``SQS`` events)."""
        owner, spec = self.find_function(logical_id)
        out = []
        for event in spec["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                target = event["Properties"]["Queue"]["Fn::GetAtt"]
                queue_id = target[0] if isinstance(target, list) else target.split(".")[0]
                out.append(owner.resources[queue_id])
        return out

    def cells(self, app: str = CELLED_STACK) -> dict[str, StackResult]:
        """The cell stacks of ``app`` among the children, by cell (empty: uncelled)."""
        return {
            name.partition("/")[2]: child
            for name, child in self.children.items()
            if name.startswith(app + "/")
        }

    def functions(self) -> dict[str, StackResult]:
        """Every function logical id in this stack tree, with the stack that holds it (a
        function whose condition was false is not deployed, and not listed)."""
        out = {
            lid: self
            for lid, res in self.template.get("Resources", {}).items()
            if res["Type"] == "AWS::Serverless::Function" and lid not in self.skipped
        }
        for child in self.children.values():
            out.update(child.functions())
        return out

    def global_tables(self) -> list[str]:
        """The names of the global tables this stack tree created with more than one
        replica (the children's first): what a local replicator keeps in step across the
        regions. Empty in a region that does not own them (docs/deploy.md, Regions)."""
        out = [name for child in self.children.values() for name in child.global_tables()]
        for lid, res in self.template.get("Resources", {}).items():
            deployed = self.resources.get(lid)
            if res["Type"] == GLOBAL_TABLE and deployed and len(deployed.replicas) > 1:
                out.append(str(deployed.ref))
        return out


class LocalCloud:
    """Deploys templates' stateful resources against one AWS endpoint."""

    def __init__(
        self,
        *,
        prefix: str = "relay",
        region: str = DEFAULT_REGION,
        function_urls: dict[str, str] | None = None,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
    ) -> None:
        self.prefix = prefix
        self.region = region
        self.function_urls = function_urls or {}
        self.endpoint_url = endpoint_url
        self._session = session or boto3.session.Session(region_name=region)
        self._clients: dict[tuple[str, str], Any] = {}
        self._names: set[str] = set()

    def client(self, service: str, region: str | None = None) -> Any:
        """A client of this LocalCloud's region, or of ``region`` (a global table's replica
        in another region is created there, as AWS does)."""
        key = (service, region or self.region)
        if key not in self._clients:
            self._clients[key] = self._session.client(
                service, region_name=key[1], endpoint_url=self.endpoint_url
            )
        return self._clients[key]

    # --- deploy -----------------------------------------------------------------------

    def deploy_system(
        self, parameters: dict[str, Any] | None = None, cells: int | None = None
    ) -> StackResult:
        """Every stack of a stage in order (:data:`SYSTEM_STACKS`, then template.yaml).

        Each stack gets those of ``parameters`` it declares (``Stage`` for all of them,
        ``IdentityPublicKey`` for the platform stack...); the gateway stack's secret ARN
        defaults to a local placeholder. Returns the gateway stack, whose ``children`` are
        the others by their :data:`SYSTEM_STACKS` names.

        ``cells`` (default: ``parameters["LoadsCells"]``, else 1): with N of 2 or more the
        loads stack is deployed N times in order, ``Cell=cell-1`` .. ``cell-N``, children
        ``LoadsApp/cell-1`` ..., and every stack declaring ``LoadsCells`` gets N; with 1
        the one uncelled ``LoadsApp``.
        """
        given = dict(parameters or {})
        given.setdefault("IdentitySigningKeySecretArn", LOCAL_IDENTITY_SECRET_ARN)
        if cells is None:
            cells = int(given.get(CELLS_PARAMETER, 1))
        celled = cell_names(cells)
        given[CELLS_PARAMETER] = cells
        children = {}
        for name, path in SYSTEM_STACKS:
            if name == CELLED_STACK and celled:
                for cell in celled:  # one after another, as the pipeline deploys them
                    key = f"{name}/{cell}"
                    children[key] = self.deploy(path, {**given, "Cell": cell}, name=key)
                continue
            children[name] = self.deploy(path, given, name=name)
        root = self.deploy(ROOT_TEMPLATE, given, name="root")
        root.children = {**children, **root.children}
        root.inputs = given
        return root

    def deploy(
        self,
        path: Path = ROOT_TEMPLATE,
        parameters: dict[str, Any] | None = None,
        name: str = "root",
    ) -> StackResult:
        """One template as one stack (its nested applications included)."""
        path = Path(path).resolve()
        template = load_template(path)
        params = {}
        for pname, spec in template.get("Parameters", {}).items():
            if parameters and pname in parameters:
                params[pname] = parameters[pname]
            elif "Default" in spec:
                params[pname] = spec["Default"]
            else:
                raise TemplateError(f"{path.name}: parameter {pname} has no value and no default")
            allowed = spec.get("AllowedValues")
            if allowed is not None and str(params[pname]) not in {str(v) for v in allowed}:
                raise TemplateError(
                    f"{path.name}: parameter {pname}={params[pname]!r} is not one of {allowed}"
                )
            pattern = spec.get("AllowedPattern")
            if pattern is not None and not re.fullmatch(pattern, str(params[pname])):
                raise TemplateError(
                    f"{path.name}: parameter {pname}={params[pname]!r} does not match {pattern}"
                )
            if SSM_VALUE_TYPE.match(str(spec.get("Type", ""))):
                # CloudFormation reads such a parameter's value from SSM by its name.
                params[pname] = self._ssm_value(path.name, str(params[pname]))
        stack = StackResult(name, path, template, params, {}, {}, {})
        resources = template.get("Resources", {})
        for logical_id in _dependency_order(resources):
            spec = resources[logical_id]
            if "Condition" in spec and not self._condition(stack, spec["Condition"]):
                # as CloudFormation: a resource whose condition is false is not made
                stack.skipped.add(logical_id)
                continue
            stack.resources[logical_id] = self._create(stack, logical_id, spec)
        for logical_id, spec in resources.items():
            if "Condition" in spec and not self._condition(stack, spec["Condition"]):
                continue
            if spec["Type"] == "AWS::Serverless::Function":
                # Not created locally, but CloudFormation resolves a function's properties
                # (its SSM references included) when it creates it: a missing one fails here.
                self.resolve(stack, spec.get("Properties", {}))
                stack.environments[logical_id] = self._environment(stack, spec)
        stack.outputs = {
            k: self.resolve(stack, v["Value"]) for k, v in template.get("Outputs", {}).items()
        }
        return stack

    def function_env(self, stack: StackResult, logical_id: str) -> dict[str, str]:
        """Environment variables Lambda would give ``logical_id``, resolved locally."""
        owner, spec = stack.find_function(logical_id)
        if logical_id in owner.environments:
            return dict(owner.environments[logical_id])
        return self._environment(owner, spec)

    def stream_event_sources(self, stack: StackResult, logical_id: str) -> list[str]:
        """The stream ARNs that trigger ``logical_id``, resolved as CloudFormation would
        (SSM references included): its ``DynamoDB`` events, then the stream
        ``AWS::Lambda::EventSourceMapping`` resources of its stack that invoke it or its
        alias (those whose ``Condition`` is false were not deployed)."""
        owner, spec = stack.find_function(logical_id)
        if logical_id in owner.skipped:
            return []  # not deployed here (a projector outside the primary region)
        streams = [
            str(self.resolve(owner, event["Properties"]["Stream"]))
            for event in spec["Properties"].get("Events", {}).values()
            if event["Type"] == "DynamoDB"
        ]
        for mapping_id, mapping in owner.template.get("Resources", {}).items():
            if mapping["Type"] != "AWS::Lambda::EventSourceMapping":
                continue
            deployed = owner.resources.get(mapping_id)
            target = mapping["Properties"].get("FunctionName")
            ref = target.get("Ref", "") if isinstance(target, dict) else str(target)
            if deployed is None or _function_of(ref) != logical_id:
                continue
            arn = str(deployed.attrs["EventSourceArn"])
            if ":dynamodb:" in arn and "/stream/" in arn:
                streams.append(arn)
        return streams

    def _environment(self, stack: StackResult, spec: dict[str, Any]) -> dict[str, str]:
        glob = stack.template.get("Globals", {}).get("Function", {})
        env = dict(glob.get("Environment", {}).get("Variables", {}))
        env.update(spec["Properties"].get("Environment", {}).get("Variables", {}))
        resolved = {k: self.resolve(stack, v) for k, v in env.items()}
        return {k: str(v) for k, v in resolved.items() if v is not NO_VALUE}

    def _function_url(self, stack: StackResult, function: str, alias: str | None = None) -> str:
        """A function's (alias's) URL: ``function_urls["<stack>/<Function>[:<alias>]"]`` for
        a cell's stack (``LoadsApp/cell-1/LoadsFunction``), else ``function_urls[
        "<Function>[:<alias>]"]``; an alias without its own URL has the function's (locally
        one process serves every alias of a function)."""
        scope = f"{stack.name}/" if "/" in stack.name else ""
        keys = ([f"{scope}{function}:{alias}"] if alias else []) + [f"{scope}{function}"]
        for key in keys:
            if key in self.function_urls:
                return self.function_urls[key]
        return f"http://{function}{'.' + stack.name.partition('/')[2] if scope else ''}.invalid/"

    def _physical_name(self, logical_id: str, explicit: Any, stack: StackResult) -> str:
        # A cell's stack (LoadsApp/cell-1) names its resources with its cell, as
        # CloudFormation names them with the stack's name: two cells never share one.
        cell = stack.name.partition("/")[2]
        implicit = f"{self.prefix}-{cell}-{logical_id}" if cell else f"{self.prefix}-{logical_id}"
        name = str(self.resolve(stack, explicit)) if explicit else implicit
        if name in self._names:
            raise TemplateError(f"two resources would be named {name!r}")
        self._names.add(name)
        return name

    def _arn(self, service: str, resource: str, region: str | None = None) -> str:
        return f"arn:aws:{service}:{region or self.region}:{ACCOUNT_ID}:{resource}"

    def _create(self, stack: StackResult, logical_id: str, spec: dict[str, Any]) -> Resource:
        kind = spec["Type"]
        props = spec.get("Properties", {})
        if kind == "AWS::Serverless::Application":
            location = props["Location"]
            if not isinstance(location, str) or "://" in location:
                raise TemplateError(f"{logical_id}: only local nested templates are deployable")
            child_params = {
                k: self.resolve(stack, v) for k, v in props.get("Parameters", {}).items()
            }
            child = self.deploy(stack.path.parent / location, child_params, name=logical_id)
            stack.children[logical_id] = child
            return Resource(
                ref=logical_id, attrs={f"Outputs.{k}": v for k, v in child.outputs.items()}
            )
        if kind == "AWS::DynamoDB::Table":
            return self._table(stack, logical_id, props)
        if kind == GLOBAL_TABLE:
            return self._global_table(stack, logical_id, props)
        if kind == "AWS::SQS::Queue":
            return self._queue(stack, logical_id, props)
        if kind == "AWS::SNS::Topic":
            name = self._physical_name(logical_id, props.get("TopicName"), stack)
            arn = self.client("sns").create_topic(Name=name)["TopicArn"]
            return Resource(ref=arn, attrs={"TopicArn": arn, "TopicName": name})
        if kind == "AWS::KMS::Key":
            meta = self.client("kms").create_key(
                KeySpec=props.get("KeySpec", "SYMMETRIC_DEFAULT"),
                KeyUsage=props.get("KeyUsage", "ENCRYPT_DECRYPT"),
                Description=str(self.resolve(stack, props.get("Description", logical_id))),
                MultiRegion=self.resolve(stack, props.get("MultiRegion", False)) in (True, "true"),
            )["KeyMetadata"]
            return Resource(ref=meta["KeyId"], attrs={"Arn": meta["Arn"], "KeyId": meta["KeyId"]})
        if kind == "AWS::KMS::ReplicaKey":
            # As KMS does: the primary (a multi-Region key in another region) is replicated
            # into this region, the same key material under the same key id.
            primary = str(self.resolve(stack, props["PrimaryKeyArn"]))
            meta = self.client("kms", primary.split(":")[3]).replicate_key(
                KeyId=primary.rsplit("/", 1)[1],  # the key id (moto takes no ARN here)
                ReplicaRegion=self.region,
            )["ReplicaKeyMetadata"]
            return Resource(ref=meta["KeyId"], attrs={"Arn": meta["Arn"], "KeyId": meta["KeyId"]})
        if kind == "AWS::SSM::Parameter":
            name = self._physical_name(logical_id, props.get("Name"), stack)
            value = str(self.resolve(stack, props["Value"]))
            ssm = self.client("ssm")
            try:
                ssm.put_parameter(
                    Name=name,
                    Value=value,
                    Type=str(props.get("Type", "String")),
                    Description=str(self.resolve(stack, props.get("Description", ""))),
                )
            except ssm.exceptions.ParameterAlreadyExists:
                # As in AWS: a name belongs to one stack (docs/deploy.md, SSM naming scheme).
                raise TemplateError(
                    f"{stack.path.name}: {logical_id}: SSM parameter {name} already exists"
                ) from None
            return Resource(ref=name, attrs={"Type": props.get("Type", "String"), "Value": value})
        if kind == "AWS::KMS::Alias":
            name = str(self.resolve(stack, props["AliasName"]))
            self.client("kms").create_alias(
                AliasName=name, TargetKeyId=str(self.resolve(stack, props["TargetKeyId"]))
            )
            return Resource(ref=name)
        if kind == "AWS::Serverless::Function":
            name = self._physical_name(logical_id, props.get("FunctionName"), stack)
            url = self._function_url(stack, logical_id)
            # SAM names the URL resource of a function "<Function>Url".
            stack.resources[f"{logical_id}Url"] = Resource(ref=url, attrs={"FunctionUrl": url})
            arn = self._arn("lambda", f"function:{name}")
            alias = props.get("AutoPublishAlias")
            if alias:
                # SAM's alias: "<Function>Alias<name>", or "<Function>.Alias" in a Ref.
                published = Resource(ref=f"{arn}:{alias}")
                stack.resources[f"{logical_id}Alias{alias}"] = published
                stack.resources[f"{logical_id}.Alias"] = published
            return Resource(ref=name, attrs={"Arn": arn, "Version.Version": LOCAL_FUNCTION_VERSION})
        if kind == "AWS::Lambda::Url":
            # A function alias's URL: "<Function>:<alias>" in function_urls if given, else
            # the function's own (locally one process serves every alias of a function).
            function, alias = _url_target(stack.template["Resources"], props["TargetFunctionArn"])
            url = self._function_url(stack, function, alias)
            return Resource(ref=url, attrs={"FunctionUrl": url})
        if kind == "AWS::Lambda::EventSourceMapping":
            # Not created locally (relay.eventsource runs it), but resolved as CloudFormation
            # would: a source it cannot read fails here; stream_event_sources lists it.
            resolved = self.resolve(stack, props)
            return Resource(
                ref=logical_id,
                attrs={
                    "EventSourceArn": resolved.get("EventSourceArn", ""),
                    "FunctionName": resolved.get("FunctionName", ""),
                },
            )
        # Alarms, log groups, policies, the HTTP API...: nothing to create locally.
        return Resource(ref=logical_id, attrs={"Arn": self._arn("local", logical_id)})

    def _table(self, stack: StackResult, logical_id: str, props: dict[str, Any]) -> Resource:
        props = self.resolve(stack, props)
        name = self._physical_name(logical_id, props.get("TableName"), stack)
        kwargs: dict[str, Any] = {"BillingMode": props.get("BillingMode", "PROVISIONED")}
        if kwargs["BillingMode"] == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = {
                k: int(v) for k, v in props["ProvisionedThroughput"].items()
            }
        return self._create_table(name, props, kwargs, self.region)

    def _global_table(self, stack: StackResult, logical_id: str, props: dict[str, Any]) -> Resource:
        """An ``AWS::DynamoDB::GlobalTable`` as AWS makes it: the table in every replica
        region, each with its own stream; Ref is the name, GetAtt Arn and StreamArn are
        this region's replica's."""
        props = self.resolve(stack, props)
        name = self._physical_name(logical_id, props.get("TableName"), stack)
        regions = [str(replica["Region"]) for replica in props.get("Replicas", [])]
        if self.region not in regions:
            # CloudFormation's rule too: the stack's own region is one of the replicas.
            raise TemplateError(
                f"{stack.path.name}: {logical_id}: no replica in the stack's region {self.region}"
            )
        if len(set(regions)) != len(regions):
            raise TemplateError(f"{stack.path.name}: {logical_id}: a region is replicated twice")
        if props.get("BillingMode", "PROVISIONED") != "PAY_PER_REQUEST":
            raise TemplateError(
                f"{stack.path.name}: {logical_id}: only PAY_PER_REQUEST global tables deploy "
                "locally"
            )
        if not props.get("StreamSpecification"):
            raise TemplateError(
                f"{stack.path.name}: {logical_id}: a global table needs its stream "
                "(NEW_AND_OLD_IMAGES)"
            )
        kwargs = {"BillingMode": "PAY_PER_REQUEST"}
        here = self._create_table(name, props, kwargs, self.region)
        for region in regions:
            if region != self.region:
                self._create_table(name, props, kwargs, region)
        ordered = [self.region] + [r for r in regions if r != self.region]
        return Resource(ref=name, attrs=here.attrs, replicas=ordered)

    def _create_table(
        self, name: str, props: dict[str, Any], kwargs: dict[str, Any], region: str
    ) -> Resource:
        """One table in ``region`` from resolved Table or GlobalTable properties (the same
        key schema, indexes, stream and TTL), plus ``kwargs`` (its billing)."""
        kwargs = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            **kwargs,
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if props.get("StreamSpecification"):
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        ddb = self.client("dynamodb", region)
        created = ddb.create_table(**kwargs)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        attrs = {"Arn": self._arn("dynamodb", f"table/{name}", region)}
        if created.get("LatestStreamArn"):
            attrs["StreamArn"] = created["LatestStreamArn"]
        return Resource(ref=name, attrs=attrs)

    def _queue(self, stack: StackResult, logical_id: str, props: dict[str, Any]) -> Resource:
        props = self.resolve(stack, props)
        name = self._physical_name(logical_id, props.get("QueueName"), stack)
        if props.get("FifoQueue") and not name.endswith(".fifo"):
            name += ".fifo"
        attributes = {
            k: _queue_attribute(v) for k, v in props.items() if k not in ("QueueName", "Tags")
        }
        url = self.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self._arn("sqs", name)
        return Resource(ref=url, attrs={"Arn": arn, "QueueName": name, "QueueUrl": url})

    # --- intrinsics -------------------------------------------------------------------

    def resolve(self, stack: StackResult, value: Any) -> Any:
        if isinstance(value, str) and "{{resolve:" in value:
            return self._dynamic_references(stack, value)
        if isinstance(value, list):
            items = [self.resolve(stack, v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((fn, arg),) = value.items()
            if fn == "Ref":
                return self._ref(stack, arg)
            if fn == "Fn::GetAtt":
                lid, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self._getatt(stack, lid, attr)
            if fn == "Fn::Sub":
                return self.resolve(stack, self._sub(stack, arg))
            if fn == "Fn::Join":
                sep, items = arg
                return sep.join(str(x) for x in self.resolve(stack, items))
            if fn == "Fn::Select":
                index, items = arg
                return self.resolve(stack, items)[int(self.resolve(stack, index))]
            if fn == "Fn::Split":
                sep, text = arg
                return str(self.resolve(stack, text)).split(sep)
            if fn == "Fn::If":
                name, if_true, if_false = arg
                return self.resolve(stack, if_true if self._condition(stack, name) else if_false)
            if fn.startswith("Fn::"):
                raise TemplateError(f"{stack.path.name}: {fn} is not supported locally")
        resolved = {k: self.resolve(stack, v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _condition(self, stack: StackResult, name: str) -> bool:
        try:
            return self._truth(stack, stack.template["Conditions"][name])
        except KeyError:
            raise TemplateError(f"{stack.path.name}: condition {name} is not defined") from None

    def _truth(self, stack: StackResult, value: Any) -> bool:
        ((fn, arg),) = value.items()
        if fn == "Fn::Equals":
            left, right = (str(self.resolve(stack, v)) for v in arg)
            return left == right
        if fn == "Fn::Not":
            return not self._truth(stack, arg[0])
        if fn == "Fn::And":
            return all(self._truth(stack, v) for v in arg)
        if fn == "Fn::Or":
            return any(self._truth(stack, v) for v in arg)
        if fn == "Condition":
            return self._condition(stack, arg)
        raise TemplateError(f"{stack.path.name}: {fn} is not supported in a condition")

    def _dynamic_references(self, stack: StackResult, text: str) -> str:
        """``{{resolve:ssm:NAME}}`` (or ``NAME:VERSION``) replaced by the parameter's value."""

        def value(match: re.Match[str]) -> str:
            service, reference = match.groups()
            if service != "ssm":
                raise TemplateError(f"{stack.path.name}: resolve:{service} is not supported")
            name, _, version = reference.partition(":")
            return self._ssm_value(stack.path.name, f"{name}:{version}" if version else name)

        return DYNAMIC_REFERENCE.sub(value, text)

    def _ssm_value(self, template: str, name: str) -> str:
        try:
            return str(self.client("ssm").get_parameter(Name=name)["Parameter"]["Value"])
        except self.client("ssm").exceptions.ParameterNotFound:
            raise TemplateError(
                f"{template}: SSM parameter {name} does not exist; the stack that publishes it "
                "deploys first (docs/deploy.md)"
            ) from None

    def _ref(self, stack: StackResult, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::StackName": f"{self.prefix}-{stack.name}",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in stack.parameters:
            return stack.parameters[name]
        if name in stack.resources:
            return stack.resources[name].ref
        raise TemplateError(f"{stack.path.name}: Ref {name} is not defined (yet)")

    def _getatt(self, stack: StackResult, logical_id: str, attr: str) -> Any:
        try:
            return stack.resources[logical_id].attrs[attr]
        except KeyError:
            raise TemplateError(
                f"{stack.path.name}: GetAtt {logical_id}.{attr} is unknown"
            ) from None

    def _sub(self, stack: StackResult, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else arg
        variables = {k: self.resolve(stack, v) for k, v in variables.items()}
        out, i = [], 0
        while (start := text.find("${", i)) >= 0:
            end = text.index("}", start)
            out.append(text[i:start])
            token = text[start + 2 : end]
            if token.startswith("!"):
                out.append("${" + token[1:] + "}")
            elif token in variables:
                out.append(str(variables[token]))
            elif "." in token:
                out.append(str(self._getatt(stack, *token.split(".", 1))))
            else:
                out.append(str(self._ref(stack, token)))
            i = end + 1
        out.append(text[i:])
        return "".join(out)


def _queue_attribute(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _dependency_order(resources: dict[str, Any]) -> list[str]:
    """Logical ids ordered so that every resource comes after those it references."""

    def owner(ref: str) -> str:
        # SAM synthesises "<Function>Url" and the alias "<Function>Alias<name>" (in a Ref
        # also "<Function>.Alias") with the function: depend on the function.
        if ref not in resources and ref.endswith("Url") and ref[:-3] in resources:
            return ref[:-3]
        if ref not in resources:
            function = re.sub(r"(\.Alias|Alias\w+)$", "", ref)
            if resources.get(function, {}).get("Type") == "AWS::Serverless::Function":
                return function
        return ref

    # Functions are not created locally: their references are resolved only when their
    # environment is read, after the whole stack exists (and a function may refer to an
    # alarm that refers back to it, as canary deployments do).
    deps = {
        lid: set()
        if spec["Type"] == "AWS::Serverless::Function"
        else {owner(r) for r in _references(spec)} & set(resources)
        for lid, spec in resources.items()
    }
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(lid: str) -> None:
        if state.get(lid) == 2:
            return
        if state.get(lid) == 1:
            raise TemplateError(f"circular reference through {lid}")
        state[lid] = 1
        for dep in sorted(deps[lid]):
            if dep != lid:
                visit(dep)
        state[lid] = 2
        order.append(lid)

    for lid in resources:
        visit(lid)
    return order


def _function_of(ref: str) -> str:
    """The function logical id a ``Ref`` to it or to its alias names."""
    return re.sub(r"(\.Alias|Alias\w+)$", "", ref)


def _url_target(resources: dict[str, Any], target: Any) -> tuple[str, str | None]:
    """(function logical id, alias or None) an ``AWS::Lambda::Url``'s target refers to."""
    ref = target.get("Ref", "") if isinstance(target, dict) else ""
    spec = resources.get(ref, {})
    if spec.get("Type") == "AWS::Serverless::Function":
        return ref, None
    if spec.get("Type") == "AWS::Lambda::Alias":
        return spec["Properties"]["FunctionName"]["Ref"], str(spec["Properties"]["Name"])
    function = re.sub(r"(\.Alias|Alias\w+)$", "", ref)
    published = resources.get(function, {}).get("Properties", {}).get("AutoPublishAlias")
    if published and ref in (f"{function}.Alias", f"{function}Alias{published}"):
        return function, str(published)
    raise TemplateError(f"a function URL's target {target!r} is not a function or its alias")


def _references(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, list):
        for v in value:
            found |= _references(v)
    elif isinstance(value, dict):
        for key, v in value.items():
            if key == "Ref" and isinstance(v, str):
                found.add(v)
            elif key == "Fn::GetAtt":
                found.add((v if isinstance(v, list) else v.split("."))[0])
            elif key == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                for part in text.split("${")[1:]:
                    found.add(part.split("}")[0].split(".")[0])
                if not isinstance(v, str):
                    found |= _references(v[1])
            elif key == "DependsOn":
                found |= {v} if isinstance(v, str) else set(v)
            else:
                found |= _references(v)
    return found
