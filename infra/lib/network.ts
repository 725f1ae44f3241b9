import { RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { ack } from './nag.ts';

export interface NetworkProps {
  /** @default 2 */
  maxAzs?: number;
  /** @default RetentionDays.ONE_MONTH */
  flowLogRetention?: logs.RetentionDays;
}

/**
 * The VPC of the GPU training instances: public subnets only, no NAT gateway. The instances need outbound
 * HTTPS only (ECR, S3, CloudWatch Logs, Batch); a public IP behind a security group with no inbound rule
 * gives them that for nothing, where a NAT gateway or interface endpoints would bill every hour even while
 * no job runs. Created here rather than looked up, so `cdk synth` needs no credentials.
 */
export class Network extends Construct {
  readonly vpc: ec2.Vpc;

  constructor(scope: Construct, id: string, props: NetworkProps = {}) {
    super(scope, id);
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: props.maxAzs ?? 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 }],
    });
    // Rejected traffic only: what an audit needs (probes, misconfiguration) at a fraction of ALL's volume.
    const flowLogs = new logs.LogGroup(this, 'FlowLogs', {
      retention: props.flowLogRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.vpc.addFlowLog('FlowLog', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
      trafficType: ec2.FlowLogTrafficType.REJECT,
    });
    ack(this.vpc, {
      'HIPAA.Security-VPCNoUnrestrictedRouteToIGW':
        'Public subnets by design (no NAT cost): the instances have no inbound rule and reach AWS APIs over TLS.',
      'HIPAA.Security-VPCSubnetAutoAssignPublicIpDisabled':
        'The Batch instances need a public IP to reach ECR, S3 and CloudWatch without a NAT gateway.',
      'HIPAA.Security-IAMNoInlinePolicy': 'The flow log delivery role: a CDK grant scoped to this one role.',
    });
    ack(flowLogs, {
      'HIPAA.Security-CloudWatchLogGroupEncrypted': 'Encrypted at rest by CloudWatch Logs; flow records hold addresses and ports only.',
    });
  }
}
